package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// spotSoon serves a spot notice a second from now, with a minute to the
// deadline, and nothing else.
func spotSoon(t *testing.T) *aemm.Server {
	t.Helper()
	trigger := aemm.TriggerAfter(time.Second)
	return startAEMM(t, aemm.Config{
		InstanceID: "i-0123456789abcdef0", MockTriggerTime: trigger, SpotTime: trigger.Add(time.Minute),
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"},
	})
}

// A pod annotated lastcall.io/skip-eviction: "true" stays on the node
// through a spot drain, and the DrainCompleted Event names it; the other
// pods go.
func TestSkipEvictionAnnotationKeepsThePod(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "keep", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 2, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	batch := deployment(ns, "batch", 1, on, 30)
	batch.Spec.Template.Annotations = map[string]string{drain.AnnotationSkipEviction: "true"}
	create(t, batch, env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 3 })

	a := startAgent(t, name, spotSoon(t).URL())
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	var kept string
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		left := onNode(p, name)
		if len(left) != 1 {
			return false
		}
		kept = ns + "/" + left[0].Name
		return left[0].Labels["app"] == "batch" && ready(left[0]) && left[0].DeletionTimestamp == nil
	})
	evs := waitEvents(t, "default", name, "DrainCompleted")
	if msg := evs[len(evs)-1].Message; !strings.Contains(msg, "1 annotated "+drain.AnnotationSkipEviction+" ("+kept+")") {
		t.Errorf("DrainCompleted = %q, want it to name the annotated pod %s", msg, kept)
	}
	a.checkMetrics(t, []metricWant{
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 2},
		{"lastcall_pods_skipped_total", map[string]string{"rule": drain.RuleAnnotated}, 1},
	})
}

// --cordon-only holds the node for a spot notice, with the taint effect
// --taint-effect names, and evicts nothing: the pods stay, a DrainSkipped
// Event says why, and the drain is counted as cordon_only.
func TestCordonOnlyHoldsAndEvictsNothing(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "cordon-only", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 2, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })

	a := startAgent(t, name, spotSoon(t).URL(), "--cordon-only", "--taint-effect=PreferNoSchedule")
	n := waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/spot-interruption") })
	for _, taint := range n.Spec.Taints {
		if taint.Key == "lastcall.io/spot-interruption" && taint.Effect != corev1.TaintEffectPreferNoSchedule {
			t.Errorf("taint %s has effect %s, want PreferNoSchedule", taint.Key, taint.Effect)
		}
	}
	// The decision is made once the node is held: from the Event on, no
	// drain runs for the notice.
	waitEvents(t, "default", name, "Cordoned", "DrainSkipped")
	pods, err := env.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !ready(&p) {
			t.Errorf("pod %s is going under --cordon-only", p.Name)
		}
	}
	a.checkMetrics(t, []metricWant{
		{"lastcall_actions_total", map[string]string{"action": "cordon", "result": "success"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "cordon_only"}, 1},
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 0},
	})
}

// With --rebalance-hold-timeout, a rebalance recommendation that no
// interruption follows holds the node until the timeout has passed since
// EC2 issued it, then lastcall releases the node, says so, and does not
// hold it again while the agent runs.
func TestRebalanceHoldExpires(t *testing.T) {
	name := newNode(t, "rebalance-expiry", nil)
	issued := aemm.TriggerAfter(time.Second)
	imds := startAEMM(t, aemm.Config{
		InstanceID: "i-0123456789abcdef0", MockDelay: aemm.Never, RebalanceTriggerTime: issued,
		ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"},
	})
	const timeout = 4 * time.Second
	a := startAgent(t, name, imds.URL(), "--rebalance-action=cordon", "--rebalance-hold-timeout="+timeout.String())
	waitNode(t, name, func(n *corev1.Node) bool {
		return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/rebalance-recommendation")
	})
	n := waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return !n.Spec.Unschedulable && !hasTaint(n, "lastcall.io/rebalance-recommendation") && len(st.Holds) == 0
	})
	if released := time.Now(); released.Before(issued.Add(timeout)) {
		t.Errorf("hold released at %s, before the recommendation issued at %s was %s old", released, issued, timeout)
	}
	if n.Labels[node.LabelExcludeLB] != "" {
		t.Errorf("node still out of load balancers after the hold expired")
	}
	waitEvents(t, "default", name, "HoldExpired", "InterruptionCancelled")
	a.checkMetrics(t, []metricWant{
		{"lastcall_holds_expired_total", map[string]string{"kind": "rebalance-recommendation"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "uncordon", "result": "success"}, 1},
	})
}

// In queue mode, --cordon-only holds the node of a terminate lifecycle
// hook and completes the action with CONTINUE once it is held, evicting
// nothing: the pod goes with the instance.
func TestQueueCordonOnlyCompletesTheHookOnceHeld(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	create(t, deployment(ns, "web", 1, map[string]string{"kubernetes.io/hostname": m.node}, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, m.node)) == 1 })
	p := e.startProcessor(t, "cordon-only", "--cordon-only")
	e.send(t, terminateHook(m))
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" || c.Token != m.token {
		t.Fatalf("completion %+v, want CONTINUE", c)
	}
	if n := waitNode(t, m.node, func(*corev1.Node) bool { return true }); !n.Spec.Unschedulable {
		t.Error("action completed with the node not cordoned")
	}
	waitEvents(t, "default", m.node, "Cordoned", "DrainSkipped")
	pods, err := env.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if on := onNode(ptrs(pods.Items), m.node); len(on) != 1 || on[0].DeletionTimestamp != nil {
		t.Errorf("pods on the node after a cordon-only hook: %d, want the one pod, not going", len(on))
	}
	p.checkMetrics(t, []metricWant{
		{"lastcall_lifecycle_completions_total", map[string]string{"result": "CONTINUE", "drain": "not_applicable"}, 1},
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 0},
	})
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
