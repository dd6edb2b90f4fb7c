package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// With no interruption at all, the one process that keeps every node's
// drainability (--mode=drainability, beside the agents) tells what would
// block a drain of a node now: a PodDisruptionBudget that allows no
// disruption shows in lastcall_drain_blockers and a DrainBlocked Event on
// the node, and its removal brings the gauge back to 0 with a
// DrainUnblocked Event. The node's agent watches no budget for it.
func TestDrainabilityFollowsABudget(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "drainable", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 2, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })

	quiet := quietAEMM()
	quiet.Events = &aemm.ScheduledEvent{State: "completed"} // no drain starts
	imds := startAEMM(t, quiet)
	agent := startAgent(t, name, imds.URL())
	a := runApp(t, options(t, "--mode=drainability", "--cloud=aws", "--log-format=text"), "mode", "drainability")

	pdbBlocked := map[string]string{"node": name, "reason": "pdb-allows-no-disruption"}
	eventually(t, "every reason's series at 0", func() bool {
		for _, r := range []string{"pdb-allows-no-disruption", "no-controller", "emptydir", "no-prestop-behind-service", "grace-exceeds-deadline"} {
			if v, ok := a.gauge(t, "lastcall_drain_blockers", map[string]string{"node": name, "reason": r}); !ok || v != 0 {
				return false
			}
		}
		return true
	})

	budgets := env.Client.PolicyV1().PodDisruptionBudgets(ns)
	create(t, pdb(ns, "web", 2), budgets.Create)
	eventually(t, "both pods blocked by the budget", func() bool {
		v, ok := a.gauge(t, "lastcall_drain_blockers", pdbBlocked)
		return ok && v == 2
	})
	for _, e := range waitEvents(t, "default", name, "DrainBlocked") {
		if e.Reason == "DrainBlocked" {
			if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "pdb-allows-no-disruption: "+ns+"/web-") ||
				!strings.Contains(e.Message, "PodDisruptionBudget web allows 0 disruptions") {
				t.Errorf("DrainBlocked Event: %s %q", e.Type, e.Message)
			}
		}
	}

	if err := budgets.Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the budget's blockers gone", func() bool {
		v, ok := a.gauge(t, "lastcall_drain_blockers", pdbBlocked)
		return ok && v == 0
	})
	for _, e := range waitEvents(t, "default", name, "DrainUnblocked") {
		switch e.Reason {
		case "DrainUnblocked":
			if e.Type != corev1.EventTypeNormal {
				t.Errorf("DrainUnblocked Event of type %s", e.Type)
			}
		case "DrainBlocked":
			if e.Count > 1 {
				t.Errorf("DrainBlocked recorded %d times for one change", e.Count)
			}
		case "DrainStarted", "Cordoned":
			t.Errorf("a drain started: %s %q", e.Reason, e.Message)
		}
	}
	if v := a.metric(t, "lastcall_drainability_evaluations_total", nil); v < 3 {
		t.Errorf("lastcall_drainability_evaluations_total = %v, want at least 3", v)
	}
	if _, ok := agent.metrics(t)["lastcall_drain_blockers"]; ok {
		t.Error("the agent keeps a drainability gauge: every agent would watch the cluster's budgets")
	}
}

// gauge returns the value of the one series of name with exactly the
// given labels, and whether it is there.
func (a *agent) gauge(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mf, ok := a.metrics(t)[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.Metric {
		if len(m.Label) == len(labels) && hasLabels(m, labels) && m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// During a drain the drainability process records no DrainBlocked or
// DrainUnblocked Event on the node: those warn before an interruption, and
// the drain's own Events say what blocks it then. Once the drain is over,
// the node's gauge shows none of the pods that left it.
func TestDrainabilityQuietWhileDraining(t *testing.T) {
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	name := newNode(t, "quiet", pool)
	d := deployment(ns, "gated", 4, pool, 0)
	d.Spec.Template.Labels[cluster.SlowReadyLabel] = "true" // replacements Ready 2 s after creation
	create(t, d, env.Client.AppsV1().Deployments(ns).Create)
	create(t, pdb(ns, "gated", 3), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 4 })
	newNode(t, "quiet-spare", pool)
	dr := runApp(t, options(t, "--mode=drainability", "--cloud=aws", "--log-format=text"), "mode", "drainability")
	eventually(t, "the node evaluated", func() bool {
		_, ok := dr.gauge(t, "lastcall_drain_blockers", map[string]string{"node": name, "reason": "pdb-allows-no-disruption"})
		return ok
	})

	startAgent(t, name, spotNotice(t).URL(), "--imds-signals=spot")
	n := waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	st, _ := node.StateOf(n)
	held := st.Holds[0].Since
	eventually(t, "no blocker left on the drained node", func() bool {
		for _, r := range []string{"pdb-allows-no-disruption", "no-controller", "emptydir", "no-prestop-behind-service", "grace-exceeds-deadline"} {
			if v, ok := dr.gauge(t, "lastcall_drain_blockers", map[string]string{"node": name, "reason": r}); !ok || v != 0 {
				return false
			}
		}
		return true
	})
	list, err := env.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && (e.Reason == "DrainBlocked" || e.Reason == "DrainUnblocked") && !e.LastTimestamp.Time.Before(held.Truncate(time.Second)) {
			t.Errorf("%s Event during the drain (%d times, last at %v; held since %v): %q", e.Reason, e.Count, e.LastTimestamp, held, e.Message)
		}
	}
}
