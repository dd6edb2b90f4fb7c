package lease

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

// A lease another replica holds expires by when this replica saw it last
// change, on this replica's clock, whatever renewTime the holder wrote: a
// holder whose clock runs an hour ahead does not keep the node an hour
// after it died, and one an hour behind does not lose it while it renews.
func TestExpiryJudgedByWhenSeenChanging(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		clk := clocktesting.NewFakeClock(now)
		secs := int32(15)
		holder := "other"
		renewed := metav1.NewMicroTime(now.Add(skew))
		client := fake.NewClientset(&coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: Name("node-a"), Namespace: "ns", ResourceVersion: "1"},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &renewed},
		})
		l := NewLocker(client, "ns", "me", 15*time.Second, clk, slog.New(slog.DiscardHandler))

		if _, err := l.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
			t.Fatalf("skew %s: first sight: %v, want ErrHeld", skew, err)
		}
		clk.Step(10 * time.Second)
		// The holder renews: a new version, seen now.
		le, err := client.CoordinationV1().Leases("ns").Get(ctx, Name("node-a"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		le.ResourceVersion = "2"
		if _, err := client.CoordinationV1().Leases("ns").Update(ctx, le, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		clk.Step(10 * time.Second)
		if _, err := l.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
			t.Fatalf("skew %s: renewed 10 s ago: %v, want ErrHeld", skew, err)
		}
		clk.Step(6 * time.Second) // 16 s since the renewal was first seen
		if _, err := l.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
			t.Fatalf("skew %s: the renewal was first seen 6 s ago: %v, want ErrHeld", skew, err)
		}
		clk.Step(10 * time.Second)
		h, err := l.Acquire(ctx, "node-a")
		if err != nil {
			t.Fatalf("skew %s: unchanged for 16 s, longer than its 15 s: %v", skew, err)
		}
		h.Release(ctx)
	}
}

// The workers of one replica share its lease; it is given up when the
// last of them releases it.
func TestWorkersShareTheLease(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	client := fake.NewClientset()
	l := NewLocker(client, "ns", "me", 15*time.Second, clk, slog.New(slog.DiscardHandler))
	a, err := l.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatalf("a second worker: %v, want the lease shared", err)
	}
	holder := func() string {
		le, err := client.CoordinationV1().Leases("ns").Get(ctx, Name("node-a"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if le.Spec.HolderIdentity == nil {
			return ""
		}
		return *le.Spec.HolderIdentity
	}
	a.Release(ctx)
	if got := holder(); got != "me" {
		t.Fatalf("after one of two workers released: holder %q, want me", got)
	}
	b.Release(ctx)
	if got := holder(); got != "" {
		t.Fatalf("after the last worker released: holder %q, want none", got)
	}
}

// A node's Lease names the node as its owner, without blocking the node's
// deletion, so the garbage collector deletes it with the node; a Lease
// left by an earlier node of the same name is given the current one.
func TestLeaseOwnedByItsNode(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	client := fake.NewClientset()
	uid := types.UID("uid-1")
	l := NewLocker(client, "ns", "me", 15*time.Second, clk, slog.New(slog.DiscardHandler),
		WithNodeUID(func(node string) (types.UID, bool) { return uid, node == "node-a" }))
	owners := func() []metav1.OwnerReference {
		le, err := client.CoordinationV1().Leases("ns").Get(ctx, Name("node-a"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return le.OwnerReferences
	}
	h, err := l.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	h.Release(ctx)
	want := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "node-a", UID: "uid-1"}}
	if got := owners(); !reflect.DeepEqual(got, want) {
		t.Fatalf("owners %+v, want %+v", got, want)
	}
	uid = "uid-2" // the node was replaced by one of the same name
	h, err = l.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	h.Release(ctx)
	want[0].UID = "uid-2"
	if got := owners(); !reflect.DeepEqual(got, want) {
		t.Fatalf("owners %+v, want %+v", got, want)
	}
}
