package drain

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// schedule is the plan of a running drain in time: its deadline and, for
// each group, when its pods must be gone. Retargeting it re-plans the drain
// in place; whoever waits on it is told through the changes channel.
type schedule struct {
	start  time.Time
	margin time.Duration

	mu       sync.Mutex
	deadline time.Time
	groups   []Group
	ends     []time.Time
	changes  chan struct{} // closed and replaced at each change
}

func newSchedule(start, deadline time.Time, margin time.Duration) *schedule {
	return &schedule{start: start, margin: margin, deadline: deadline, changes: make(chan struct{})}
}

// plan sets the groups whose ends the schedule keeps.
func (s *schedule) plan(groups []Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = groups
	s.ends = GroupEnds(groups, s.start, s.deadline, s.margin)
}

// retarget moves the deadline and works the group ends out again.
func (s *schedule) retarget(deadline time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deadline.Equal(s.deadline) {
		return
	}
	s.deadline = deadline
	s.ends = GroupEnds(s.groups, s.start, s.deadline, s.margin)
	close(s.changes)
	s.changes = make(chan struct{})
}

// current is the deadline and the group ends now.
func (s *schedule) current() (time.Time, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline, s.ends
}

// deadlineAndChanges is the deadline now and a channel closed at its next
// change.
func (s *schedule) deadlineAndChanges() (time.Time, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline, s.changes
}

// end is when the pods of group i must be gone now (zero without a
// deadline), and a channel closed when that may change.
func (s *schedule) end(i int) (time.Time, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.ends) {
		return s.ends[i], s.changes
	}
	return time.Time{}, s.changes
}

// giveUp calls expire once the deadline, less half the margin, has passed,
// following the deadline as it changes, until ctx ends.
func (s *schedule) giveUp(ctx context.Context, clk clock.Clock, expire func()) {
	for {
		deadline, changed := s.deadlineAndChanges()
		var at <-chan time.Time
		if !deadline.IsZero() {
			at = clk.After(max(0, deadline.Add(-s.margin/2).Sub(clk.Now())))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-at:
			expire()
			return
		}
	}
}
