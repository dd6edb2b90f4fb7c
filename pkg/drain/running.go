package drain

import (
	"sync"

	"k8s.io/utils/clock"
)

// running tracks the drains in progress, for the deadline gauge.
type running struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	runs  map[*schedule]bool
}

func (r *running) add(s *schedule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[s] = true
}

func (r *running) remove(s *schedule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.runs, s)
}

// deadlineUsed is the largest share of its window a running drain has
// spent, against the deadline it works to now; drains without a deadline
// count as 0.
func (r *running) deadlineUsed() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now, used := r.clock.Now(), 0.0
	for s := range r.runs {
		deadline, _ := s.current()
		if deadline.IsZero() {
			continue
		}
		window := deadline.Sub(s.start)
		if window <= 0 {
			used = max(used, 1)
			continue
		}
		used = max(used, min(float64(now.Sub(s.start))/float64(window), 1))
	}
	return used
}
