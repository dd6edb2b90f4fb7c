package interruption

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

type recorder struct {
	mu        sync.Mutex
	successes int
	failures  []string
}

func (r *recorder) Success(string) { r.mu.Lock(); r.successes++; r.mu.Unlock() }
func (r *recorder) Failure(_, reason string, _ error) {
	r.mu.Lock()
	r.failures = append(r.failures, reason)
	r.mu.Unlock()
}

// step answers each poll from a script, then keeps answering the last entry.
type step struct {
	events []Event
	err    error
}

func TestPollerDedupesBacksOffAndRecovers(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	spot := Event{ID: NewID(KindSpotInterruption, "terminate", "t"), Kind: KindSpotInterruption, Action: ActionDrain}
	script := []step{
		{err: Malformed(errors.New("bad json"))},
		{err: &net.OpError{Op: "dial", Err: errors.New("refused")}},
		{events: []Event{spot}},
		{events: []Event{spot}}, // same notice again: not re-sent
		{events: []Event{{ID: spot.ID, Kind: spot.Kind, Action: ActionCancel}}},
	}
	var mu sync.Mutex
	calls := 0
	polled := make(chan int, 16)
	rec := &recorder{}
	p := &Poller{
		SourceName: "test", Interval: 100 * time.Millisecond, Health: rec, Clock: clk, Log: slog.New(slog.DiscardHandler),
		Poll: func(context.Context) ([]Event, error) {
			mu.Lock()
			defer mu.Unlock()
			s := script[min(calls, len(script)-1)]
			calls++
			polled <- calls
			return s.events, s.err
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Event, 16)
	done := make(chan error)
	go func() { done <- p.Run(ctx, out) }()

	// waitPoll waits for poll n, then for the poller to sleep, and returns
	// after advancing the fake clock by d.
	waitPoll := func(n int, d time.Duration) {
		t.Helper()
		select {
		case got := <-polled:
			if got != n {
				t.Fatalf("poll %d, want %d", got, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("poll %d never came", n)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !clk.HasWaiters() {
			if time.Now().After(deadline) {
				t.Fatal("poller never waited")
			}
			time.Sleep(time.Millisecond)
		}
		clk.Step(d)
	}
	waitPoll(1, 100*time.Millisecond) // first failure: wait one interval
	waitPoll(2, 200*time.Millisecond) // second: doubled
	waitPoll(3, 100*time.Millisecond) // recovered: back to the interval
	ev := <-out
	if ev.ID != spot.ID || ev.Source != "test" || !ev.Observed.Equal(time.Unix(1000, 0).Add(300*time.Millisecond)) {
		t.Fatalf("unexpected first event %+v", ev)
	}
	waitPoll(4, 100*time.Millisecond)
	waitPoll(5, 100*time.Millisecond)
	ev = <-out
	if ev.Action != ActionCancel {
		t.Fatalf("second event %+v, want the cancel (the repeat must not be re-sent)", ev)
	}
	select {
	case extra := <-out:
		t.Fatalf("unexpected extra event %+v", extra)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if fmt.Sprint(rec.failures) != "[malformed unreachable]" || rec.successes < 3 {
		t.Fatalf("health: failures %v successes %d", rec.failures, rec.successes)
	}
}

func TestPollerSurvivesPanic(t *testing.T) {
	rec := &recorder{}
	p := &Poller{SourceName: "p", Interval: time.Hour, Health: rec, Log: slog.New(slog.DiscardHandler),
		Poll: func(context.Context) ([]Event, error) { panic("parser bug") }}
	_, err := p.pollOnce(context.Background())
	if ReasonOf(err) != ReasonMalformed {
		t.Fatalf("got %v, want a malformed read error", err)
	}
}

func TestBackoffCaps(t *testing.T) {
	p := &Poller{Interval: time.Second, MaxBackoff: 5 * time.Second}
	b := p.backoff()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := b.Step(); got != w {
			t.Errorf("failure %d: backoff %s, want %s", i+1, got, w)
		}
	}
}

func TestNewIDIsContentDerived(t *testing.T) {
	a := NewID(KindSpotInterruption, "terminate", "2026-01-01T00:00:00Z")
	if a != NewID(KindSpotInterruption, "terminate", "2026-01-01T00:00:00Z") {
		t.Fatal("same notice, different IDs")
	}
	if a == NewID(KindSpotInterruption, "stop", "2026-01-01T00:00:00Z") {
		t.Fatal("different notices, same ID")
	}
	if a == NewID(KindSpotInterruption, "terminat", "e2026-01-01T00:00:00Z") {
		t.Fatal("parts must be separated")
	}
	if ShortID(a) == "" || len(ShortID(a)) != 16 {
		t.Fatalf("short id %q", ShortID(a))
	}
}

func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{context.DeadlineExceeded, ReasonTimeout},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), ReasonTimeout},
		{Malformed(errors.New("x")), ReasonMalformed},
		{&ReadError{Reason: ReasonHTTP, Err: errors.New("500")}, ReasonHTTP},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, ReasonUnreachable},
		{errors.New("other"), ReasonOther},
	} {
		if got := ReasonOf(tc.err); got != tc.want {
			t.Errorf("%v: got %s, want %s", tc.err, got, tc.want)
		}
	}
}
