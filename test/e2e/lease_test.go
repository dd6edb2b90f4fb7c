package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/lease"
)

// Per-node leases: one holder at a time; a holder that stops renewing
// loses the node after the lease duration; Release frees it at once; a
// holder whose lease is taken notices.
func TestNodeLeases(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	node := "lease-node-" + ns
	a := lease.NewLocker(env.Client, ns, "a", 3*time.Second, clock.RealClock{}, discardLog())
	b := lease.NewLocker(env.Client, ns, "b", 3*time.Second, clock.RealClock{}, discardLog())

	ha, err := a.Acquire(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, node); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second holder: %v, want ErrHeld", err)
	}
	// Two workers of one replica share its hold: the lease stays until
	// the last of them releases it.
	ha2, err := a.Acquire(ctx, node)
	if err != nil {
		t.Fatalf("second worker of the holder: %v, want the lease shared", err)
	}
	ha2.Release(ctx)
	if _, err := b.Acquire(ctx, node); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("after one of two workers released: %v, want ErrHeld", err)
	}
	// a renews: b still cannot take it after more than one duration, as b
	// sees the lease change.
	time.Sleep(4 * time.Second) // longer than the lease: only renewal keeps it
	if _, err := b.Acquire(ctx, node); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("after a renewed: %v, want ErrHeld", err)
	}
	ha.Release(ctx)
	hb, err := b.Acquire(ctx, node)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}

	// Simulate b dying: take its lease object over as a third holder would
	// after expiry, by rewriting it; b must notice on its next renewal.
	c := "c"
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error { // b renews it meanwhile
		l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, lease.Name(node), metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = &c
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		_, err = env.Client.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-hb.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("b never noticed it lost the lease")
	}
	hb.Release(ctx)
	if got, _ := env.Client.CoordinationV1().Leases(ns).Get(ctx, lease.Name(node), metav1.GetOptions{}); *got.Spec.HolderIdentity != "c" {
		t.Fatalf("b's release cleared c's lease: holder %v", got.Spec.HolderIdentity)
	}
}
