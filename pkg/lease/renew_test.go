package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

// What the API server does with the renewals of holder "a".
type answer int

const (
	answerOK   answer = iota
	answerFail        // an error at once: the connection refused
	answerHang        // nothing until the test ends the hang
)

// apiServer is a fake API server whose Lease updates by holder "a" answer
// as the test says, and whose every write gives the Lease a new
// resourceVersion, as the real one does, so another replica sees each
// renewal.
type apiServer struct {
	client *fake.Clientset
	calls  chan struct{} // one per update by "a"
	hang   chan struct{} // closed by endHang
	// endHang ends every hang, now and to come.
	endHang func()

	mu      sync.Mutex
	answer  answer
	version int
}

func newAPIServer(t *testing.T) *apiServer {
	s := &apiServer{client: fake.NewClientset(), calls: make(chan struct{}, 100), hang: make(chan struct{})}
	s.endHang = sync.OnceFunc(func() { close(s.hang) })
	t.Cleanup(s.endHang)
	s.client.PrependReactor("*", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
		var le *coordinationv1.Lease
		switch a := action.(type) {
		case k8stesting.CreateAction:
			le = a.GetObject().(*coordinationv1.Lease)
		case k8stesting.UpdateAction:
			le = a.GetObject().(*coordinationv1.Lease)
		default:
			return false, nil, nil
		}
		s.mu.Lock()
		s.version++
		le.ResourceVersion = fmt.Sprint(s.version)
		ans := s.answer
		s.mu.Unlock()
		if action.GetVerb() != "update" || le.Spec.HolderIdentity == nil || *le.Spec.HolderIdentity != "a" {
			return false, nil, nil
		}
		s.calls <- struct{}{}
		switch ans {
		case answerFail:
			return true, nil, errors.New("connection refused")
		case answerHang:
			<-s.hang
			return true, nil, errors.New("connection reset by peer")
		}
		return false, nil, nil
	})
	return s
}

func (s *apiServer) set(a answer) {
	s.mu.Lock()
	s.answer = a
	s.mu.Unlock()
}

// call waits for holder a's next update to reach the server.
func (s *apiServer) call(t *testing.T) {
	t.Helper()
	select {
	case <-s.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal reached the API server")
	}
}

func lost(h *Held) bool {
	select {
	case <-h.Lost():
		return true
	default:
		return false
	}
}

// settle waits until h's renewal loop is waiting for its next turn on the
// fake clock, or has given up: what a step of the clock set off is done.
func settle(t *testing.T, clk *clocktesting.FakeClock, h *Held) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clk.Waiters() != 1 && !lost(h) {
		if time.Now().After(deadline) {
			t.Fatal("the renewal loop never came back to wait")
		}
		time.Sleep(time.Millisecond)
	}
}

var start = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// One failed renewal, a blip of the API server, does not lose the lease:
// the holder tries again and keeps it.
func TestOneFailedRenewalKeepsTheLease(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(start)
	s := newAPIServer(t)
	a := NewLocker(s.client, "ns", "a", 15*time.Second, clk, slog.New(slog.DiscardHandler))
	h, err := a.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, clk, h)

	s.set(answerFail)
	clk.Step(5 * time.Second) // the first renewal
	s.call(t)
	settle(t, clk, h)
	if lost(h) {
		t.Fatal("lease lost after one failed renewal, 5 s into a 15 s lease")
	}
	s.set(answerOK)
	for range 4 { // the retry comes well before the renew deadline
		clk.Step(time.Second)
		settle(t, clk, h)
	}
	if lost(h) {
		t.Fatal("lease lost although the retry succeeded")
	}
	le, err := s.client.CoordinationV1().Leases("ns").Get(ctx, Name("node-a"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := le.Spec.RenewTime.Time; !got.After(start.Add(5 * time.Second)) {
		t.Fatalf("renewTime %s, want renewed by the retry after %s", got, start.Add(5*time.Second))
	}
	h.Release(ctx)
}

// Renewals that keep failing lose the lease once none has succeeded for
// the renew deadline, on the holder's clock, and that is before another
// replica with the same lease duration may take the node: that replica
// counts the whole duration from when it saw the last renewal.
func TestFailedRenewalsLoseTheLeaseBeforeAnotherCanTakeIt(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(start)
	s := newAPIServer(t)
	a := NewLocker(s.client, "ns", "a", 15*time.Second, clk, slog.New(slog.DiscardHandler))
	b := NewLocker(s.client, "ns", "b", 15*time.Second, clk, slog.New(slog.DiscardHandler))
	h, err := a.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, clk, h)
	clk.Step(5 * time.Second) // a renews, the last time it can
	s.call(t)
	settle(t, clk, h)
	if _, err := b.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
		t.Fatalf("b, just after a renewed: %v, want ErrHeld", err)
	}
	lastRenewal := clk.Now()

	s.set(answerFail)
	var lostAt, takenAt time.Time
	for takenAt.IsZero() && clk.Since(start) < time.Minute {
		clk.Step(250 * time.Millisecond)
		settle(t, clk, h)
		if lostAt.IsZero() && lost(h) {
			lostAt = clk.Now()
		}
		if hb, err := b.Acquire(ctx, "node-a"); err == nil {
			takenAt = clk.Now()
			defer hb.Release(ctx)
		} else if !errors.Is(err, ErrHeld) {
			t.Fatal(err)
		}
	}
	t.Logf("a renewed last at +%s, lost at +%s; b took the node at +%s",
		lastRenewal.Sub(start), lostAt.Sub(start), takenAt.Sub(start))
	switch {
	case lostAt.IsZero():
		t.Fatal("a never lost the lease")
	case takenAt.IsZero():
		t.Fatal("b never took the lease")
	case !lostAt.After(lastRenewal.Add(5 * time.Second)):
		t.Errorf("a lost the lease %s after its last renewal, at its first failure: want it to retry", lostAt.Sub(lastRenewal))
	case lostAt.After(lastRenewal.Add(10 * time.Second)):
		t.Errorf("a lost the lease %s after its last renewal, want by its 10 s renew deadline", lostAt.Sub(lastRenewal))
	case !takenAt.After(lostAt):
		t.Errorf("b took the node at +%s, while a still held it", takenAt.Sub(start))
	}
	// Failures at +10 s, then every 1.5 s until the deadline at +15 s.
	if got := testutil.ToFloat64(a.metrics.renewalFailures.WithLabelValues(failureError)); got != 4 {
		t.Errorf("lastcall_lease_renewal_failures_total{reason=error} %v, want 4", got)
	}
	if got := testutil.ToFloat64(a.metrics.losses.WithLabelValues(lossDeadline)); got != 1 {
		t.Errorf("lastcall_lease_losses_total{reason=deadline} %v, want 1", got)
	}
	h.Release(ctx)
}

// A holder cut off from the API server, its renewal hanging on a dead
// connection, declares the lease lost by its renew deadline, before
// another replica may take the node; it does not wait for the call.
func TestHungRenewalLosesTheLeaseByTheDeadline(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(start)
	s := newAPIServer(t)
	a := NewLocker(s.client, "ns", "a", 3*time.Second, clk, slog.New(slog.DiscardHandler))
	b := NewLocker(s.client, "ns", "b", 3*time.Second, clk, slog.New(slog.DiscardHandler))
	h, err := a.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, clk, h)
	if _, err := b.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
		t.Fatalf("b: %v, want ErrHeld", err)
	}

	s.set(answerHang)
	clk.Step(time.Second) // the renewal, which hangs
	s.call(t)
	clk.Step(time.Second) // 2 s since the last renewal: a's renew deadline
	select {
	case <-h.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a never declared the lease lost while its renewal hung; b may take the node 3 s after it last saw a renew")
	}
	s.endHang()
	if _, err := b.Acquire(ctx, "node-a"); !errors.Is(err, ErrHeld) {
		t.Fatalf("b when a gave up: %v, want ErrHeld (a gives up first)", err)
	}
	clk.Step(1100 * time.Millisecond)
	hb, err := b.Acquire(ctx, "node-a")
	if err != nil {
		t.Fatalf("b, 3.1 s after it saw a's last renewal: %v", err)
	}
	hb.Release(ctx)
	h.Release(ctx)
	if got := testutil.ToFloat64(a.metrics.renewalFailures.WithLabelValues(failureTimeout)); got != 1 {
		t.Errorf("lastcall_lease_renewal_failures_total{reason=timeout} %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.metrics.losses.WithLabelValues(lossDeadline)); got != 1 {
		t.Errorf("lastcall_lease_losses_total{reason=deadline} %v, want 1", got)
	}
}
