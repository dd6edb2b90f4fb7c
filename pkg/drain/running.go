package drain

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// running tracks the drains in progress, for the deadline gauge.
type running struct {
	clock  clock.PassiveClock
	mu     sync.Mutex
	drains map[*Request]time.Time // started at
}

func (r *running) add(req *Request, start time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drains[req] = start
}

func (r *running) remove(req *Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.drains, req)
}

// deadlineUsed is the largest share of its window a running drain has
// spent; drains without a deadline count as 0.
func (r *running) deadlineUsed() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	now, used := r.clock.Now(), 0.0
	for req, start := range r.drains {
		if req.Deadline.IsZero() {
			continue
		}
		window := req.Deadline.Sub(start)
		if window <= 0 {
			used = max(used, 1)
			continue
		}
		used = max(used, min(float64(now.Sub(start))/float64(window), 1))
	}
	return used
}
