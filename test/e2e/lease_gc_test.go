package e2e

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/lease"
)

// The queue processor drains nodes under per-node Leases; once the nodes
// are deleted, as the cloud reclaims them, their Leases go too: the
// garbage collector deletes each with the Node that owns it, so Leases do
// not pile up one per node ever drained.
func TestQueueLeasesGoWithTheirNodes(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	members := e.group(t, 2, pool)
	for _, m := range members {
		e.send(t, terminateHook(m))
	}
	e.startProcessor(t, "replica-gc")
	for _, m := range members {
		waitNode(t, m.node, drainedNode)
	}
	eventually(t, "every message deleted", func() bool { return e.depth(t) == 0 })

	ctx := context.Background()
	leases := env.Client.CoordinationV1().Leases("default")
	for _, m := range members {
		le, err := leases.Get(ctx, lease.Name(m.node), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the lease of drained node %s: %v", m.node, err)
		}
		t.Logf("lease %s: owners %+v", le.Name, le.OwnerReferences)
		if err := env.Client.CoreV1().Nodes().Delete(ctx, m.node, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now()
	for _, m := range members {
		eventually(t, "the lease of deleted node "+m.node+" to be gone", func() bool {
			_, err := leases.Get(ctx, lease.Name(m.node), metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
	}
	t.Logf("leases gone %s after their nodes were deleted", time.Since(at).Round(100*time.Millisecond))
}
