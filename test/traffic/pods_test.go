package traffic

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// service creates a namespace and a Service without a selector in it, whose
// EndpointSlices the test writes. It returns the namespace.
func service(t *testing.T, name string) string {
	t.Helper()
	ctx := testContext(t)
	ns, err := env.CreateNamespace(ctx, "traffic")
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if _, err := env.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// endpoint is one endpoint of a slice: a pod's name and its readiness (nil:
// unset).
type endpoint struct {
	pod   string
	ready *bool
}

// writeSlice creates or updates an EndpointSlice of the Service with the
// endpoints, each given an address outside loopback.
func writeSlice(t *testing.T, ns, svc, name string, eps ...endpoint) {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for i, ep := range eps {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("192.0.2.%d", i+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: ep.ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: ep.pod},
		})
	}
	ctx := testContext(t)
	slices := env.Client.DiscoveryV1().EndpointSlices(ns)
	old, err := slices.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		slice.ResourceVersion = old.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
	} else {
		_, err = slices.Create(ctx, slice, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("writing EndpointSlice %s: %v", name, err)
	}
}

// startPodBalancer starts a pod balancer for the Service, resolving each
// pod to its upstream.
func startPodBalancer(t *testing.T, ns, svc string, delay time.Duration, clk clock.Clock, ups ...*upstream) *PodBalancer {
	t.Helper()
	byName := map[string]*upstream{}
	for _, u := range ups {
		byName[u.name] = u
	}
	b, err := StartPodBalancer(testContext(t), env.Client, PodBalancerConfig{
		Namespace: ns,
		Service:   svc,
		Resolve: func(ref *corev1.ObjectReference) (string, bool) {
			if u := byName[ref.Name]; u != nil && ref.Namespace == ns && ref.Kind == "Pod" {
				return u.addr, true
			}
			return "", false
		},
		PropagationDelay: delay,
		Proxy:            ProxyConfig{Clock: clk, UpstreamTimeout: 2 * time.Second, Logger: testLogger(t)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitBackends waits until the balancer's backends are the pods named.
func waitBackends(t *testing.T, list func() []string, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("backends %v", want), func() bool { return slices.Equal(list(), want) })
}

func TestPodBalancerSendsOnlyToReadyEndpoints(t *testing.T) {
	ns := service(t, "web")
	a, b, c, d := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "c"), newUpstream(t, "d")
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(true)}, endpoint{"b", ptr.To(false)}, endpoint{"c", nil})
	writeSlice(t, ns, "web", "web-2", endpoint{"d", ptr.To(true)}, endpoint{"b", ptr.To(false)})
	writeSlice(t, ns, "other", "other-1", endpoint{"b", ptr.To(true)}) // another Service's

	bal := startPodBalancer(t, ns, "web", time.Hour, nil, a, b, c, d)
	// The slices there at start apply at once, whatever the delay.
	if got, want := bal.Backends(), []string{ns + "/a", ns + "/c", ns + "/d"}; !slices.Equal(got, want) {
		t.Fatalf("backends %v, want %v", got, want)
	}
	got := answers(t, bal.URL(), 30)
	if want := map[string]int{"a": 10, "c": 10, "d": 10}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answered by %v, want %v", got, want)
	}
	if b.hits.Load() != 0 {
		t.Errorf("the endpoint that is not ready got %d requests", b.hits.Load())
	}
}

func TestPodBalancerAnswers503WithoutReadyEndpoint(t *testing.T) {
	ns := service(t, "web")
	a := newUpstream(t, "a")
	bal := startPodBalancer(t, ns, "web", 0, nil, a)
	if code, _ := get(t, bal.URL()); code != http.StatusServiceUnavailable {
		t.Errorf("with no EndpointSlice: %d, want 503", code)
	}
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(true)})
	waitBackends(t, bal.Backends, ns+"/a")
	if code, body := get(t, bal.URL()); code != http.StatusOK || body != "a" {
		t.Errorf("with a ready: %d %q, want 200 from a", code, body)
	}
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(false)})
	waitBackends(t, bal.Backends)
	if code, _ := get(t, bal.URL()); code != http.StatusServiceUnavailable {
		t.Errorf("with a not ready: %d, want 503", code)
	}
}

func TestPodBalancerAppliesChangesAfterThePropagationDelay(t *testing.T) {
	const delay = time.Second
	ns := service(t, "web")
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(true)}, endpoint{"b", ptr.To(false)})
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	bal := startPodBalancer(t, ns, "web", delay, fc, a, b)
	waitBackends(t, bal.Backends, ns+"/a")

	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(false)}, endpoint{"b", ptr.To(true)})
	eventually(t, "the change to be pending", func() bool { return bal.queue.len() == 1 && fc.HasWaiters() })
	fc.Step(delay - time.Millisecond)
	if got := answers(t, bal.URL(), 4); got["a"] != 4 {
		t.Errorf("before the delay: answered by %v, want a only", got)
	}
	fc.Step(time.Millisecond)
	waitBackends(t, bal.Backends, ns+"/b")
	if got := answers(t, bal.URL(), 4); got["b"] != 4 {
		t.Errorf("after the delay: answered by %v, want b only", got)
	}

	// Two changes seen together take effect together, in order: the
	// deletion last.
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(true)}, endpoint{"b", ptr.To(false)})
	if err := env.Client.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both changes to be pending", func() bool { return bal.queue.len() == 2 && fc.HasWaiters() })
	if got := answers(t, bal.URL(), 2); got["b"] != 2 {
		t.Errorf("before the delay: answered by %v, want b only", got)
	}
	fc.Step(delay)
	eventually(t, "both changes applied", func() bool { return bal.queue.len() == 0 })
	if got := bal.Backends(); len(got) != 0 {
		t.Errorf("backends %v after the slice was deleted, want none", got)
	}
	if code, _ := get(t, bal.URL()); code != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 503", code)
	}
}

func TestPodBalancerAnswers502WhenTheEndpointRefuses(t *testing.T) {
	ns := service(t, "web")
	refused := &upstream{name: "a", addr: refusingAddr(t)}
	writeSlice(t, ns, "web", "web-1", endpoint{"a", ptr.To(true)}, endpoint{"unresolved", ptr.To(true)})
	bal := startPodBalancer(t, ns, "web", 0, nil, refused)
	waitBackends(t, bal.Backends, ns+"/a", ns+"/unresolved")
	g, err := NewLoadGen(bal.URL(), 100, WithCount(4))
	if err != nil {
		t.Fatal(err)
	}
	if s := g.Run(testContext(t)); s.Counts[Status502] != 4 {
		t.Errorf("got %s, want four 502", s)
	}
}

func TestPodBalancerStopsWithItsContext(t *testing.T) {
	ns := service(t, "web")
	ctx, cancel := context.WithCancel(context.Background())
	bal, err := StartPodBalancer(ctx, env.Client, PodBalancerConfig{
		Namespace: ns, Service: "web",
		Resolve: func(*corev1.ObjectReference) (string, bool) { return "", false },
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-bal.Done():
	case <-time.After(waitTimeout):
		t.Fatal("the balancer did not stop")
	}
	g, err := NewLoadGen(bal.URL(), 1, WithCount(1))
	if err != nil {
		t.Fatal(err)
	}
	if s := g.Run(context.Background()); s.Counts[Refused] != 1 {
		t.Errorf("after stopping: %s, want refused", s)
	}
}
