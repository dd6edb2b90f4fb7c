package queue

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Burst holds every drain back until each node named by the messages
// received so far is held (cordoned and tainted): a spot reclaim takes
// dozens of nodes in the same minute, and a pod evicted from the first
// doomed node must not be scheduled onto the next one, to be evicted
// again. A message counts from its receipt until its nodes are held, or
// its work needs no hold; the burst is over once none is left and no new
// message came for Quiet. A drain waits at most Max for it, however long
// the burst, so a message that cannot get a worker holds nothing up
// forever.
type Burst struct {
	clock clock.WithTicker
	// Quiet is how long no message may have been received before the
	// burst is taken as over.
	Quiet time.Duration
	// Max bounds a drain's wait.
	Max time.Duration

	mu        sync.Mutex
	unsettled int
	last      time.Time
	changed   chan struct{}
}

// NewBurst returns a Burst reading time from clk.
func NewBurst(clk clock.WithTicker, quiet, maxWait time.Duration) *Burst {
	return &Burst{clock: clk, Quiet: quiet, Max: maxWait, changed: make(chan struct{})}
}

// Received counts n messages just received.
func (b *Burst) Received(n int) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsettled += n
	b.last = b.clock.Now()
	b.signal()
}

// Settled says one received message's nodes are held, or that it needs no
// hold. Each message settles once.
func (b *Burst) Settled() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsettled = max(0, b.unsettled-1)
	b.signal()
}

func (b *Burst) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Wait returns once the burst is over: every message received so far
// settled, none received for Quiet; or after Max; or when ctx ends.
func (b *Burst) Wait(ctx context.Context) {
	if b == nil {
		return
	}
	giveUp := b.clock.NewTimer(b.Max)
	defer giveUp.Stop()
	for {
		b.mu.Lock()
		unsettled, last, changed := b.unsettled, b.last, b.changed
		b.mu.Unlock()
		var quiet clock.Timer
		var quietC <-chan time.Time
		if unsettled == 0 {
			left := b.Quiet - b.clock.Since(last)
			if left <= 0 {
				return
			}
			quiet = b.clock.NewTimer(left)
			quietC = quiet.C()
		}
		stop := func() {
			if quiet != nil {
				quiet.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-giveUp.C():
			stop()
			return
		case <-changed:
		case <-quietC:
		}
		stop()
	}
}
