package e2e

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
)

// The node client reads from a cache that can lag its own last write. A
// stale copy must never make it conclude there is nothing to do.
func TestNodeClientWithStaleCache(t *testing.T) {
	ctx := context.Background()
	name := newNode(t, "stale", nil)
	fresh, err := env.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stale := func(string) (*corev1.Node, error) { return fresh, nil } // forever the node before any hold
	c := node.NewClient(env.Client, stale, clock.RealClock{}, node.OwnerAgent, false, discardLog())
	ev := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, "x"), Kind: interruption.KindSpotInterruption, Action: interruption.ActionDrain}

	if ch, err := c.Hold(ctx, name, ev); err != nil || !ch.Cordoned || !ch.Tainted || !ch.LBExcluded {
		t.Fatalf("Hold: %+v, %v", ch, err)
	}
	// The same hold again, through the stale cache: the write conflicts,
	// the live read shows it done.
	if ch, err := c.Hold(ctx, name, ev); err != nil || !ch.Unchanged {
		t.Fatalf("second Hold: %+v, %v", ch, err)
	}
	if err := c.RecordDrain(ctx, name, "success", ev.ID); err != nil {
		t.Fatal(err)
	}
	st, _, err := c.State(ctx, name)
	if err != nil || len(st.Holds) != 1 || st.Holds[0].Drain != "success" {
		t.Fatalf("drain not recorded through a stale cache: %+v, %v", st, err)
	}
	if ch, err := c.Release(ctx, name, ev.ID); err != nil || !ch.Uncordoned || !ch.Untainted || !ch.LBRestored {
		t.Fatalf("Release through a stale cache: %+v, %v", ch, err)
	}
	n, err := env.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable || hasTaint(n, node.TaintKey(ev.Kind)) || n.Annotations[node.AnnotationState] != "" {
		t.Fatalf("node not released: %+v %v", n.Spec, n.Annotations)
	}
}
