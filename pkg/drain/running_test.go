package drain

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestDeadlineUsed(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	r := &running{clock: clk, runs: map[*schedule]bool{}}
	if got := r.deadlineUsed(); got != 0 {
		t.Fatalf("no drain: got %v, want 0", got)
	}
	long := newSchedule(t0, t0.Add(100*time.Second), 0)
	short := newSchedule(t0, t0.Add(20*time.Second), 0)
	none := newSchedule(t0, time.Time{}, 0)
	r.add(long)
	r.add(none)
	clk.SetTime(t0.Add(10 * time.Second))
	if got := r.deadlineUsed(); got != 0.1 {
		t.Errorf("one drain 10s into 100s: got %v, want 0.1", got)
	}
	r.add(short)
	if got := r.deadlineUsed(); got != 0.5 {
		t.Errorf("the fuller drain counts: got %v, want 0.5", got)
	}
	short.retarget(t0.Add(10 * time.Second))
	if got := r.deadlineUsed(); got != 1 {
		t.Errorf("retargeted to now: got %v, want 1", got)
	}
	short.retarget(t0.Add(40 * time.Second))
	if got := r.deadlineUsed(); got != 0.25 {
		t.Errorf("retargeted later: got %v, want 0.25", got)
	}
	clk.SetTime(t0.Add(time.Hour))
	if got := r.deadlineUsed(); got != 1 {
		t.Errorf("past the deadline: got %v, want 1", got)
	}
	r.remove(long)
	r.remove(short)
	if got := r.deadlineUsed(); got != 0 {
		t.Errorf("only a drain without deadline left: got %v, want 0", got)
	}
}
