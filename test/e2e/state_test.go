package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
)

// lastcall's state annotation, unreadable as found on a node: a hand
// edit, a copy cut short, one written by a newer lastcall.
var unreadableStates = map[string]string{
	"garbage":        "not json at all",
	"truncated JSON": `{"holds":[{"id":"spot-interruption-0123456789abcdef","kind":"spot-inter`,
	"future version": `{"version":99,"holds":{"by-owner":{"agent":[]}}}`,
}

// An unreadable lastcall.io/state annotation does not stop a spot notice:
// the node is still cordoned and drained, with a Warning Event saying the
// state was unreadable.
func TestUnreadableStateStillHoldsAndDrains(t *testing.T) {
	for what, raw := range unreadableStates {
		t.Run(what, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t)
			name := newNode(t, "unreadable", nil)
			mutateNode(t, name, func(n *corev1.Node) {
				if n.Annotations == nil {
					n.Annotations = map[string]string{}
				}
				n.Annotations[node.AnnotationState] = raw
			})
			create(t, deployment(ns, "web", 2, map[string]string{"kubernetes.io/hostname": name}, 0), env.Client.AppsV1().Deployments(ns).Create)
			waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })

			a := startAgent(t, name, spotNotice(t).URL(), "--imds-signals=spot")
			waitNode(t, name, func(n *corev1.Node) bool {
				st, err := node.StateOf(n)
				return err == nil && n.Spec.Unschedulable && len(st.Holds) == 1 && st.Holds[0].Drain == "success"
			})
			waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
			for _, e := range waitEvents(t, "default", name, "StateUnreadable") {
				if e.Reason == "StateUnreadable" && e.Type != corev1.EventTypeWarning {
					t.Errorf("StateUnreadable Event of type %s", e.Type)
				}
			}
			if got := a.metric(t, "lastcall_node_state_unreadable_total", nil); got < 1 {
				t.Errorf("lastcall_node_state_unreadable_total = %v, want at least 1", got)
			}
		})
	}
}

// A node found cordoned, labelled out of the load balancers and tainted for
// host maintenance, with an unreadable state: lastcall holds it for a GCE
// maintenance notice, and when the notice is withdrawn it leaves the
// cordon, the label and the taint, which it cannot prove it added.
func TestUnreadableStateReleasesOnlyWhatItAdded(t *testing.T) {
	name := newNode(t, "unproven", nil)
	taint := corev1.Taint{Key: node.TaintKey("host-maintenance"), Value: "x", Effect: corev1.TaintEffectNoSchedule}
	mutateNode(t, name, func(n *corev1.Node) {
		n.Spec.Unschedulable = true
		n.Spec.Taints = append(n.Spec.Taints, taint)
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[node.LabelExcludeLB] = "true"
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[node.AnnotationState] = unreadableStates["garbage"]
	})
	g := startGCE(t)
	a := gceAgent(t, name)
	eventually(t, "the maintenance source up", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "gce-maintenance-event"}) == 1
	})

	g.Set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
	waitNode(t, name, func(n *corev1.Node) bool {
		st, err := node.StateOf(n)
		return err == nil && len(st.Holds) == 1
	})
	g.Set("instance/maintenance-event", "NONE")
	n := waitNode(t, name, func(n *corev1.Node) bool { return n.Annotations[node.AnnotationState] == "" })
	if !n.Spec.Unschedulable || n.Labels[node.LabelExcludeLB] != "true" ||
		!slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == taint.Key }) {
		t.Errorf("released what lastcall could not prove it added: unschedulable %v, labels %v, taints %v",
			n.Spec.Unschedulable, n.Labels, n.Spec.Taints)
	}
	for _, e := range waitEvents(t, "default", name, "StateUnreadable") {
		if e.Reason == "InterruptionCancelled" && !strings.Contains(e.Message, "nothing to change") {
			t.Errorf("release Event says it changed something: %q", e.Message)
		}
	}
}

// The node's cache still shows the unreadable annotation lastcall has
// since replaced with its own state: releasing the hold reads the node
// again rather than take the stale copy's word that nothing of lastcall's
// is there, and the hold is released.
func TestReleasePastAStaleUnreadableCopy(t *testing.T) {
	name := newNode(t, "stalecopy", nil)
	mutateNode(t, name, func(n *corev1.Node) {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[node.AnnotationState] = unreadableStates["garbage"]
	})
	stale, err := env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cache := func(string) (*corev1.Node, error) { return stale, nil } // an informer that has not caught up
	nodes := node.NewClient(env.Client, cache, clock.RealClock{}, node.OwnerAgent, false, discardLog())
	ev := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, "stale-copy"),
		Kind: interruption.KindSpotInterruption, Action: interruption.ActionDrain}
	if ch, err := nodes.Hold(context.Background(), name, ev); err != nil || ch.Unreadable == nil || !ch.Cordoned {
		t.Fatalf("hold: %+v, %v; want the node cordoned, its state unreadable", ch, err)
	}
	ch, err := nodes.Release(context.Background(), name, ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := waitNode(t, name, func(*corev1.Node) bool { return true })
	if n.Spec.Unschedulable || hasTaint(n, node.TaintKey(ev.Kind)) || n.Annotations[node.AnnotationState] != "" {
		t.Errorf("release %+v left unschedulable %v, taints %v, state %q", ch, n.Spec.Unschedulable, n.Spec.Taints, n.Annotations[node.AnnotationState])
	}
}
