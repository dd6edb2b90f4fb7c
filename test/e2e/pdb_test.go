package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// With a PodDisruptionBudget that allows no disruption, the pod stays until
// a replacement is Ready elsewhere; then it is evicted, and the drain ends
// before the deadline.
func TestPDBBlocksUntilReplacementReady(t *testing.T) {
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	name := newNode(t, "pdb", pool)
	original := guardedPod(t, ns, name, pool)
	// A second node for the replacement.
	newNode(t, "pdb-spare", pool)

	trigger := aemm.TriggerAfter(time.Second)
	deadline := trigger.Add(2 * time.Minute)
	imds := startAEMM(t, aemm.Config{MockTriggerTime: trigger, SpotTime: deadline,
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"}})
	a := startAgent(t, name, imds.URL())

	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	// The eviction is refused, and retried with backoff, not in a loop.
	eventually(t, "a refused eviction", func() bool { return a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"}) >= 2 })
	waitEvents(t, ns, original.Name, "EvictionBlocked")
	retries := a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"})
	if cur, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), original.Name, metav1.GetOptions{}); err != nil || cur.DeletionTimestamp != nil {
		t.Fatalf("the pod guarded by the PDB went before a replacement existed: %v", err)
	}

	// The owner scales up; the replacement lands on the spare node. The
	// watch delivers changes in order, so when the original is first seen
	// going, the replacement must already have been seen Ready.
	scaleTo(t, ns, "api", 2)
	replacementReady := false
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		originalThere := false
		for _, x := range p {
			switch {
			case x.UID == original.UID:
				originalThere = x.DeletionTimestamp == nil
			case ready(x):
				if x.Spec.NodeName == name {
					t.Errorf("replacement %s scheduled on the cordoned node", x.Name)
				}
				replacementReady = true
			}
		}
		if !originalThere && !replacementReady {
			t.Errorf("the original pod went before its replacement was Ready")
		}
		return !originalThere
	})
	n := waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain != ""
	})
	st, _ := node.StateOf(n)
	if h := st.Holds[0]; h.Drain != "success" || h.DrainAt == nil || !h.DrainAt.Before(deadline) {
		t.Fatalf("drain result %q at %v, want success before %s", h.Drain, h.DrainAt, deadline)
	}
	t.Logf("eviction refused %v times while the budget allowed nothing; drained at %s, %s before the deadline",
		retries, st.Holds[0].DrainAt.Format(time.RFC3339Nano), deadline.Sub(*st.Holds[0].DrainAt).Round(time.Second))
}

func scaleTo(t *testing.T, ns, name string, n int32) {
	t.Helper()
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
	if _, err := env.Client.AppsV1().Deployments(ns).Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}
