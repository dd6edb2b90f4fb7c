package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// A cancelled scheduled maintenance event undoes lastcall's taint, cordon
// and load-balancer label, and nothing else: what the node had before, or
// what an operator set, stays.
func TestCancelledMaintenanceUndoesOnlyOwnChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// operator marks the node as an operator would before the event.
		operator bool
	}{
		{name: "clean node"},
		{name: "operator had cordoned and excluded it", operator: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNamespace(t)
			name := newNode(t, "maint", map[string]string{"team": "a"})
			keep := corev1.Taint{Key: "example.com/keep", Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule}
			mutateNode(t, name, func(n *corev1.Node) {
				n.Spec.Taints = append(n.Spec.Taints, keep)
				if tc.operator {
					n.Spec.Unschedulable = true
					n.Labels[node.LabelExcludeLB] = "true"
				}
			})
			if !tc.operator {
				create(t, deployment(ns, "web", 2, map[string]string{"kubernetes.io/hostname": name}, 30), env.Client.AppsV1().Deployments(ns).Create)
				waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == 2 })
			}

			event := aemm.ScheduledEvent{EventID: "instance-event-0e2e", Code: "system-reboot", State: "active",
				NotBefore: time.Now().Add(10 * time.Minute).Truncate(time.Second)}
			active := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandEvents, Events: &event})
			proxy := newSwitchProxy(t, active.URL())
			a := startAgent(t, name, proxy.url)

			waitNode(t, name, func(n *corev1.Node) bool {
				st, _ := node.StateOf(n)
				return hasTaint(n, "lastcall.io/scheduled-maintenance") && n.Spec.Unschedulable &&
					len(st.Holds) == 1 && st.Holds[0].Drain == "success"
			})
			if !tc.operator {
				waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
			}

			event.State = "canceled"
			proxy.set(t, startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandEvents, Events: &event}).URL())
			n := waitNode(t, name, func(n *corev1.Node) bool { return !hasTaint(n, "lastcall.io/scheduled-maintenance") })

			if _, ok := n.Annotations[node.AnnotationState]; ok {
				t.Errorf("lastcall state left on the node: %s", n.Annotations[node.AnnotationState])
			}
			if !hasTaint(n, keep.Key) || n.Labels["team"] != "a" {
				t.Errorf("lastcall removed what it did not add: taints %v labels %v", n.Spec.Taints, n.Labels)
			}
			if n.Spec.Unschedulable != tc.operator {
				t.Errorf("unschedulable = %v, want %v (only lastcall's own cordon is undone)", n.Spec.Unschedulable, tc.operator)
			}
			if _, ok := n.Labels[node.LabelExcludeLB]; ok != tc.operator {
				t.Errorf("load-balancer label present = %v, want %v", ok, tc.operator)
			}
			waitEvents(t, "default", name, "InterruptionCancelled")
			eventually(t, "the uncordon metric", func() bool {
				return a.metric(t, "lastcall_actions_total", map[string]string{"action": "uncordon", "result": "success"}) == 1 &&
					a.metric(t, "lastcall_events_received_total", map[string]string{"kind": "scheduled-maintenance", "action": "cancel"}) == 1
			})
		})
	}
}

// After a restart or a reboot, a hold whose notice is no longer in force is
// released once every source has read its signal.
func TestRestartReleasesStaleHold(t *testing.T) {
	name := newNode(t, "reboot", nil)
	nodes := node.NewClient(env.Client, nil, clock.RealClock{}, node.OwnerAgent, false, discardLog())
	ev := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, "stop", "2026-01-01T00:00:00Z"),
		Kind: interruption.KindSpotInterruption, Action: interruption.ActionDrain}
	if _, err := nodes.Hold(context.Background(), name, ev); err != nil {
		t.Fatal(err)
	}
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable })

	a := startAgent(t, name, startAEMM(t, quietAEMM()).URL())
	n := waitNode(t, name, func(n *corev1.Node) bool { return !n.Spec.Unschedulable })
	if hasTaint(n, "lastcall.io/spot-interruption") || n.Labels[node.LabelExcludeLB] != "" || n.Annotations[node.AnnotationState] != "" {
		t.Fatalf("stale hold not fully released: taints %v labels %v annotations %v", n.Spec.Taints, n.Labels, n.Annotations)
	}
	waitEvents(t, "default", name, "InterruptionCancelled")
	if got := a.metric(t, "lastcall_actions_total", map[string]string{"action": "drain"}); got != 0 {
		t.Errorf("a stale hold started a drain (%v)", got)
	}
}

// mutateNode changes a node as an operator would, retrying on conflicts
// with kwok and the node-lifecycle controller, which update new nodes too.
func mutateNode(t *testing.T, name string, mutate func(*corev1.Node)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(n)
		_, err = env.Client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
