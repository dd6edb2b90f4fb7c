package health

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// Liveness says whether lastcall's own loop is alive, and nothing else: a
// metadata service, the queue or the API server being slow or down shows
// in the sources' health (lastcall_source_up, readiness), never here, or
// the kubelet would restart every agent of a fleet at once, drains
// included. Loop and Heartbeat are its two forms.

// Loop is the liveness of a main loop that answers pings between its other
// work: Check sends one, and fails when the loop has not answered within
// the bound. The loop is judged only while it runs (Run): before, the
// process waits on its dependencies (the API server's caches, the cloud's
// metadata service), and once it has returned, the process exits.
type Loop struct {
	name   string
	within time.Duration
	clock  clock.Clock
	pings  chan chan struct{}

	mu      sync.Mutex
	running chan struct{} // closed when the loop returns; nil while it does not run
}

// NewLoop returns the liveness of the loop name, which must answer a ping
// within the bound.
func NewLoop(name string, within time.Duration, clk clock.Clock) *Loop {
	return &Loop{name: name, within: within, clock: clk, pings: make(chan chan struct{})}
}

// Pings is what the loop selects on beside its work: it answers each ping
// by closing it.
func (l *Loop) Pings() <-chan chan struct{} { return l.pings }

// Run runs loop, the function that answers Pings, and returns what it
// returns. Check judges the loop while Run runs.
func (l *Loop) Run(loop func() error) error {
	done := make(chan struct{})
	l.mu.Lock()
	l.running = done
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running = nil
		l.mu.Unlock()
		close(done)
	}()
	return loop()
}

// Check pings the loop, if it runs, and returns an error when it has not
// answered within the bound.
func (l *Loop) Check() error {
	l.mu.Lock()
	done := l.running
	l.mu.Unlock()
	if done == nil {
		return nil
	}
	timeout := l.clock.NewTimer(l.within)
	defer timeout.Stop()
	stuck := func() error { return fmt.Errorf("%s loop: no answer to a ping within %s", l.name, l.within) }
	reply := make(chan struct{})
	select {
	case l.pings <- reply:
	case <-done:
		return nil
	case <-timeout.C():
		return stuck()
	}
	select {
	case <-reply:
		return nil
	case <-done:
		return nil
	case <-timeout.C():
		return stuck()
	}
}

// Heartbeat is the liveness of a loop that makes a pass at least every so
// often on its own (a resync), with no dependency in the way: it beats on
// every pass, and Check fails when the last beat is older than the bound.
// Before the first beat the loop has not started (the process waits on
// its dependencies), and Check passes.
type Heartbeat struct {
	name   string
	within time.Duration
	clock  clock.PassiveClock
	last   atomic.Int64 // Unix nanoseconds of the last beat; 0 before the first
}

// NewHeartbeat returns the liveness of the loop name, which must beat at
// least every within.
func NewHeartbeat(name string, within time.Duration, clk clock.PassiveClock) *Heartbeat {
	return &Heartbeat{name: name, within: within, clock: clk}
}

// Beat records a pass of the loop.
func (h *Heartbeat) Beat() { h.last.Store(h.clock.Now().UnixNano()) }

// Check returns an error when the loop has made no pass for longer than
// the bound.
func (h *Heartbeat) Check() error {
	last := h.last.Load()
	if last == 0 {
		return nil
	}
	if since := h.clock.Since(time.Unix(0, last)); since > h.within {
		return fmt.Errorf("%s loop: no pass for %s (at least one every %s expected)", h.name, since.Round(time.Second), h.within)
	}
	return nil
}
