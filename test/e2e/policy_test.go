package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// A PodDisruptionBudget that never allows a disruption meets a 30 s spot
// deadline. respect leaves its pod to the cloud; graceful-override deletes
// it at the last moment it can still shut down gracefully, with the grace
// it has left, and says so. Both report their result before the deadline.
func TestPDBDeadlinePolicy(t *testing.T) {
	for _, policy := range drain.Policies {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			name := newNode(t, "pdb-"+string(policy)[:4], nil)
			on := map[string]string{"kubernetes.io/hostname": name}
			// "stuck": one replica, pinned to this node, so its budget
			// (minAvailable 1) never allows a disruption; grace 10 s.
			create(t, deployment(ns, "stuck", 1, on, 10), env.Client.AppsV1().Deployments(ns).Create)
			create(t, pdb(ns, "stuck", 1), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
			create(t, deployment(ns, "free", 2, on, 0), env.Client.AppsV1().Deployments(ns).Create)
			waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 3 })
			eventually(t, "the PDB to allow no disruption", func() bool {
				b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "stuck", metav1.GetOptions{})
				return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 1 && b.Status.DisruptionsAllowed == 0
			})
			deletions := watchDeletions(t, name)

			const margin = 5 * time.Second
			trigger := aemm.TriggerAfter(time.Second)
			deadline := trigger.Add(30 * time.Second)
			// The pod's 10 s grace is less than half the window, so the
			// override moment does not depend on when the drain started.
			overrideAt := deadline.Add(-margin - 10*time.Second)
			imds := startAEMM(t, aemm.Config{
				MockTriggerTime: trigger, SpotTime: deadline,
				RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never,
				Events: &aemm.ScheduledEvent{State: "completed"},
			})
			a := startAgent(t, name, imds.URL(), "--pdb-deadline-policy="+string(policy), "--deadline-margin="+margin.String())

			want := "success"
			if policy == drain.PolicyRespect {
				want = "timeout"
			}
			var hold node.Hold
			waitNode(t, name, func(n *corev1.Node) bool {
				st, _ := node.StateOf(n)
				if len(st.Holds) == 1 && st.Holds[0].Drain != "" {
					hold = st.Holds[0]
					return true
				}
				return false
			})
			if hold.Drain != want {
				t.Fatalf("drain result %q, want %q", hold.Drain, want)
			}
			if hold.DrainAt == nil || !hold.DrainAt.Before(deadline) {
				t.Errorf("drain result recorded at %v, not before the deadline %v", hold.DrainAt, deadline)
			}

			stuck := func() []*corev1.Pod {
				pods, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=stuck"})
				if err != nil {
					t.Fatal(err)
				}
				var out []*corev1.Pod
				for i := range pods.Items {
					if pods.Items[i].Spec.NodeName == name {
						out = append(out, &pods.Items[i])
					}
				}
				return out
			}
			var gone *deletion
			for _, d := range deletions() {
				if strings.HasPrefix(d.name, "stuck-") {
					gone = &d
				}
			}
			overrides := a.metric(t, "lastcall_pdb_overrides_total", map[string]string{"outcome": "deleted"})

			switch policy {
			case drain.PolicyRespect:
				if gone != nil {
					t.Errorf("respect: the budget's pod was deleted at %v", gone.at)
				}
				if left := stuck(); len(left) != 1 || left[0].DeletionTimestamp != nil {
					t.Errorf("respect: the budget's pod should still run at the deadline: %d pods", len(left))
				}
				if overrides != 0 {
					t.Errorf("respect: lastcall_pdb_overrides_total = %v, want 0", overrides)
				}
				waitEvents(t, "default", name, "DrainFailed")
			case drain.PolicyGracefulOverride:
				if gone == nil {
					t.Fatal("graceful-override: the budget's pod was never deleted")
				}
				// DeletionTimestamp has whole seconds: allow one.
				if gone.at.Before(overrideAt.Add(-time.Second)) {
					t.Errorf("graceful-override: deleted at %v, before the override moment %v", gone.at, overrideAt)
				}
				if !gone.at.Before(deadline.Add(-margin)) {
					t.Errorf("graceful-override: deleted at %v, too late to shut down before %v", gone.at, deadline.Add(-margin))
				}
				if gone.grace == nil || *gone.grace < 1 || *gone.grace > 10 {
					t.Errorf("graceful-override: deleted with grace %v, want the 1-10 s it had left", gone.grace)
				}
				if overrides != 1 {
					t.Errorf("graceful-override: lastcall_pdb_overrides_total = %v, want 1", overrides)
				}
				for _, e := range waitEvents(t, "default", name, "DisruptionBudgetOverridden") {
					if e.Reason == "DisruptionBudgetOverridden" &&
						(!strings.Contains(e.Message, "PodDisruptionBudget stuck") || !strings.Contains(e.Message, "graceful-override")) {
						t.Errorf("override Event does not name the budget and the policy: %q", e.Message)
					}
				}
			}
		})
	}
}
