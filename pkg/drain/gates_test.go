package drain

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/lastcall/lastcall/pkg/serving"
)

// A pod with the serving gate is first asked about (a dry-run eviction),
// then stops serving (its gate condition False); it is evicted only once
// its endpoint has left the Service's EndpointSlice and GateDelay has
// passed.
func TestGatedPodStopsServingBeforeEviction(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := newTimerClock(t0)
	web := pod("web-0")
	web.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: serving.Gate}}
	x := newPods(web)
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "web-0", UID: web.UID}}},
	}
	client := fake.NewClientset(slice)
	calls := make(chan string, 10)
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		if len(ev.DeleteOptions.DryRun) > 0 {
			calls <- "dry-run " + ev.Name
			return true, nil, nil
		}
		calls <- "evicted " + ev.Name
		x.remove(ev.Name)
		return true, nil, nil
	})
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" {
			return false, nil, nil
		}
		calls <- "patched " + a.(k8stesting.PatchAction).GetName() + " " + string(a.(k8stesting.PatchAction).GetPatch())
		return true, web, nil
	})
	o := DefaultOptions()
	reg := prometheus.NewRegistry()
	d := New(client, x, record.NewFakeRecorder(100), reg, slog.New(slog.DiscardHandler), clk, o)
	run := d.Start(context.Background(), Request{Node: "node-a", Kind: "spot-interruption", Deadline: t0.Add(2 * time.Minute)})

	expectCall(t, calls, "dry-run web-0")
	select {
	case got := <-calls:
		if want := `"type":"lastcall.io/serving","status":"False"`; !strings.HasPrefix(got, "patched web-0 ") || !strings.Contains(got, want) {
			t.Fatalf("got %q, want the gate patched False (%s)", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gate was not withdrawn")
	}
	// The endpoint is still ready: no eviction, whatever the time.
	ready = false
	slice.Endpoints[0].Conditions.Ready = &ready
	select {
	case got := <-calls:
		t.Fatalf("%q while the endpoint was still ready", got)
	default:
	}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(context.Background(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.waitTimer(t, o.GateDelay)
	select {
	case got := <-calls:
		t.Fatalf("%q before the gate delay passed", got)
	default:
	}
	clk.Step(o.GateDelay)
	expectCall(t, calls, "evicted web-0")
	if res, err := run.Result(); err != nil || res.Outcome != Drained || res.Evicted != 1 {
		t.Fatalf("result %+v, %v", res, err)
	}
	if got := testutil.ToFloat64(d.metrics.gates.WithLabelValues("left")); got != 1 {
		t.Errorf("lastcall_serving_gate_withdrawals_total{outcome=left} = %v, want 1", got)
	}
}
