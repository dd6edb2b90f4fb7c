package health

import (
	"context"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// waitTimer waits until something waits on clk (Check's timer).
func waitTimer(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("nothing waits on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoopAnswering(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(100, 0))
	l := NewLoop("agent", 2*time.Second, clk)
	if err := l.Check(); err != nil {
		t.Fatalf("before the loop runs: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.Run(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case reply := <-l.Pings():
					close(reply)
				}
			}
		})
	}()
	for range 3 {
		if err := l.Check(); err != nil {
			t.Fatalf("a loop that answers: %v", err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Check(); err != nil {
		t.Fatalf("once the loop has returned: %v", err)
	}
}

func TestLoopStuck(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(100, 0))
	l := NewLoop("agent", 2*time.Second, clk)
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- l.Run(func() error { <-release; return nil }) }()

	// Run marks the loop running before calling it; wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		running := l.running != nil
		l.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop never ran")
		}
		time.Sleep(time.Millisecond)
	}
	checked := make(chan error, 1)
	go func() { checked <- l.Check() }()
	waitTimer(t, clk)
	clk.Step(2*time.Second - time.Millisecond)
	select {
	case err := <-checked:
		t.Fatalf("Check returned %v before the bound", err)
	default:
	}
	clk.Step(time.Millisecond)
	err := <-checked
	if err == nil || !strings.Contains(err.Error(), "agent loop: no answer to a ping within 2s") {
		t.Fatalf("Check of a stuck loop: %v", err)
	}

	// A loop that returns while a ping waits is not stuck.
	go func() { checked <- l.Check() }()
	waitTimer(t, clk)
	close(release)
	if err := <-checked; err != nil {
		t.Fatalf("Check while the loop returned: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHeartbeat(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(100, 0))
	h := NewHeartbeat("drainability", 90*time.Second, clk)
	if err := h.Check(); err != nil {
		t.Fatalf("before the first pass: %v", err)
	}
	clk.SetTime(time.Unix(1000, 0))
	if err := h.Check(); err != nil {
		t.Fatalf("still before the first pass: %v", err)
	}
	h.Beat()
	clk.SetTime(time.Unix(1090, 0))
	if err := h.Check(); err != nil {
		t.Fatalf("within the bound: %v", err)
	}
	clk.SetTime(time.Unix(1091, 0))
	if err := h.Check(); err == nil || !strings.Contains(err.Error(), "drainability loop: no pass for 1m31s") {
		t.Fatalf("past the bound: %v", err)
	}
	h.Beat()
	if err := h.Check(); err != nil {
		t.Fatalf("after a pass: %v", err)
	}
}
