package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// A pod two PodDisruptionBudgets cover cannot be evicted at all: the
// Eviction API answers 500 ("more than one PodDisruptionBudget"). lastcall
// treats it as a pod its budget blocks: under graceful-override it is
// deleted at the last moment it can still shut down gracefully, with an
// EvictionBlocked Event once rather than a warning at every retry.
func TestTwoBudgetsOnePodIsOverridden(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "two-pdb", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "double", 1, on, 5), env.Client.AppsV1().Deployments(ns).Create)
	for _, b := range []string{"double", "double-too"} {
		p := pdb(ns, b, 0)
		p.Spec.Selector.MatchLabels = map[string]string{"app": "double"}
		create(t, p, env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 1 })
	deletions := watchDeletions(t, name)

	trigger := aemm.TriggerAfter(time.Second)
	deadline := trigger.Add(25 * time.Second)
	imds := startAEMM(t, aemm.Config{MockTriggerTime: trigger, SpotTime: deadline,
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"}})
	a := startAgent(t, name, imds.URL(), "--imds-signals=spot", "--deadline-margin=5s")

	waitEvents(t, "default", name, "DisruptionBudgetOverridden")
	var gone *deletion
	for _, d := range deletions() {
		if strings.HasPrefix(d.name, "double-") {
			gone = &d
		}
	}
	if gone == nil || !gone.at.Before(deadline.Add(-5*time.Second)) {
		t.Fatalf("the doubly budgeted pod deleted at %+v, want before the deadline less the margin (%v)", gone, deadline.Add(-5*time.Second))
	}
	list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blocked := int32(0)
	for _, e := range list.Items {
		if e.Reason == "EvictionBlocked" && e.Source.Component == "lastcall" {
			blocked += max(e.Count, 1)
		}
	}
	if blocked != 1 {
		t.Errorf("%d EvictionBlocked Events, want one", blocked)
	}
	if got := a.metric(t, "lastcall_pdb_overrides_total", map[string]string{"outcome": "deleted"}); got != 1 {
		t.Errorf("lastcall_pdb_overrides_total = %v, want 1", got)
	}
}
