package podrun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// servingGate is the condition type of lastcall's readiness gate.
const servingGate corev1.PodConditionType = "lastcall.io/serving"

// gated declares lastcall's readiness gate.
func gated(p *corev1.Pod) {
	p.Spec.ReadinessGates = append(p.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: servingGate})
}

// unscheduled leaves the pod unbound: no node, and a scheduler that does
// not exist, so that only a Binding places it.
func unscheduled(p *corev1.Pod) {
	p.Spec.NodeName = ""
	p.Spec.SchedulerName = "lastcall-test-nobody"
}

// TestReadinessGate checks that a pod with a readiness gate runs, its
// containers ready, but is not Ready until another client sets the gate's
// condition True; that its Ready condition, and its EndpointSlice
// endpoint, then follow each change of the gate's condition; and that no
// status patch of the runtime, termination included, removes or overwrites
// that condition.
func TestReadinessGate(t *testing.T) {
	e := setup(t)
	e.createService(t, "gated")
	pod := e.createPod(t, "gated", gated, onSigterm(podrun.Abrupt), grace(20))
	pod = e.waitPod(t, pod, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	mustServe(e.ctx, t, e.addr(t, pod), "gated")
	checkConditions(t, pod, false, "")
	// The endpoint appears not ready, and the pod is still not Ready then.
	e.waitEndpoint(t, "gated", pod, false)
	pod = e.getPod(t, pod)
	checkConditions(t, pod, false, "")

	for _, open := range []bool{true, false, true} {
		e.setGate(t, pod, open)
		p := e.waitPod(t, pod, fmt.Sprintf("Ready is %v", open), func(p *corev1.Pod) bool { return cluster.ReadyCondition(p) == open })
		checkConditions(t, p, open, conditionStatus(open))
		e.waitEndpoint(t, "gated", p, open)
	}

	removed := e.watchRemoval(t, pod)
	e.deletePod(t, pod)
	last := removed()
	checkExit(t, last, corev1.PodFailed, 143)
	if got := condition(last, servingGate); got != corev1.ConditionTrue {
		t.Errorf("the removed pod's %s condition: %q, want it left True by the runtime's patches", servingGate, got)
	}
}

// TestReadinessGateOpenAtStart checks that a pod whose gate's condition is
// True before it starts is Ready as soon as its server listens, and that
// the runtime's first status patch keeps that condition.
func TestReadinessGateOpenAtStart(t *testing.T) {
	e := setup(t)
	pod := e.createPod(t, "early", gated, unscheduled)
	e.setGate(t, pod, true)
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: e.node},
	}
	if err := c.Client.CoreV1().Pods(e.ns).Bind(e.ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod = e.waitPod(t, pod, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	checkConditions(t, pod, true, corev1.ConditionTrue)
	mustServe(e.ctx, t, e.addr(t, pod), "early")
}

// conditionStatus is True or False.
func conditionStatus(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}

// condition returns the status of the pod's condition of type ct, or "" if
// it has none.
func condition(p *corev1.Pod, ct corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == ct {
			return c.Status
		}
	}
	return ""
}

// checkConditions checks a running pod's conditions: one of each type,
// ContainersReady True, Ready as ready says, and the gate's as gate says
// ("": none).
func checkConditions(t *testing.T, p *corev1.Pod, ready bool, gate corev1.ConditionStatus) {
	t.Helper()
	var seen []corev1.PodConditionType
	for _, c := range p.Status.Conditions {
		if slices.Contains(seen, c.Type) {
			t.Errorf("pod %s has two conditions of type %s: %+v", p.Name, c.Type, p.Status.Conditions)
		}
		seen = append(seen, c.Type)
	}
	if p.Status.Phase != corev1.PodRunning || condition(p, corev1.ContainersReady) != corev1.ConditionTrue {
		t.Errorf("pod %s: phase %s, ContainersReady %q; want Running and True", p.Name, p.Status.Phase, condition(p, corev1.ContainersReady))
	}
	if got := condition(p, corev1.PodReady); got != conditionStatus(ready) {
		t.Errorf("pod %s: Ready %q, want %s (gate %q)", p.Name, got, conditionStatus(ready), gate)
	}
	if got := condition(p, servingGate); got != gate {
		t.Errorf("pod %s: %s condition %q, want %q", p.Name, servingGate, got, gate)
	}
}

// setGate sets the pod's condition of lastcall's gate, as lastcall's agent
// does: a strategic merge patch of the status with that condition alone.
func (e *env) setGate(t *testing.T, pod *corev1.Pod, open bool) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{{
		Type: servingGate, Status: conditionStatus(open), LastTransitionTime: metav1.Now(),
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Client.CoreV1().Pods(pod.Namespace).Patch(e.ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("setting the %s condition of pod %s to %v: %v", servingGate, pod.Name, open, err)
	}
}

// getPod reads the pod (this UID) now.
func (e *env) getPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(pod.Namespace).Get(e.ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != pod.UID {
		t.Fatalf("pod %s replaced", pod.Name)
	}
	return p
}

// createService creates a headless Service in front of every pod the test
// serves, for the EndpointSlice controller to follow.
func (e *env) createService(t *testing.T, name string) {
	t.Helper()
	_, err := c.Client.CoreV1().Services(e.ns).Create(e.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{cluster.ServedLabel: e.ns},
			Ports:     []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// waitEndpoint polls the Service's EndpointSlices until the pod (this UID)
// has one endpoint there, at its pod IP, whose ready condition is ready
// (unset counts as ready, as the API says to read it).
func (e *env) waitEndpoint(t *testing.T, service string, pod *corev1.Pod, ready bool) {
	t.Helper()
	var found []discoveryv1.Endpoint
	err := wait.PollUntilContextCancel(e.ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.DiscoveryV1().EndpointSlices(e.ns).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + service,
		})
		if err != nil {
			return false, err
		}
		found = nil
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.UID == pod.UID {
					found = append(found, ep)
				}
			}
		}
		if len(found) != 1 {
			return false, nil
		}
		ep := found[0]
		return slices.Equal(ep.Addresses, []string{pod.Status.PodIP}) && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) == ready, nil
	})
	if err != nil {
		t.Fatalf("pod %s: waiting for one endpoint at %s with ready %v in Service %s's EndpointSlices: %v (found %+v)",
			pod.Name, pod.Status.PodIP, ready, service, err, found)
	}
}
