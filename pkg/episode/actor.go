package episode

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/pkg/volumes"
)

// episode is one node's episode. Its state is owned by its loop; the
// Manager and the episode's own helpers reach it by enqueueing functions.
type episode struct {
	m    *Manager
	node string
	log  *slog.Logger
	ctx  context.Context // the loop's

	mu    sync.Mutex
	queue []func()
	wake  chan struct{}
	ended bool

	notices   map[string]*notice
	run       *drainRun
	releasing map[string]*retry // holds to release, by notice ID
	busy      int               // completers running
	gone      bool              // the node was deleted
	instance  string            // the first instance a notice named
	// gating is set while the first drain pass waits for Deps.DrainGate,
	// gated once it has passed it.
	gating, gated bool
}

// notice is a notice in force and what became of it.
type notice struct {
	Notice
	// deadline is when the node goes by this notice, the fallback applied
	// when it names none (drain notices).
	deadline time.Time
	held     bool
	hold     *retry // set while a failed hold waits to be tried again
	// ending is set once the notice's part is over: its drain ended and
	// its completer ran.
	ending *Ending
	// completing is set while its completer runs.
	completing bool
	tickets    []*Ticket
}

// retry is a failed call waiting to be tried again.
type retry struct{ backoff wait.Backoff }

// drainRun is a drain pass in progress.
type drainRun struct {
	drain  Drain
	cancel context.CancelFunc
	start  time.Time
	// deadline is the deadline the pass works to now.
	deadline time.Time
	// covers are the notices the pass drains for, by ID.
	covers map[string]bool
	// stopped is set once the pass was stopped because no notice needs it
	// any more: a notice that comes now waits for the next pass.
	stopped bool
	// keepAliveCtx is the completers' KeepAlive's; keepAlive ends it when
	// the pass ends.
	keepAliveCtx context.Context
	keepAlive    context.CancelFunc
}

func newEpisode(m *Manager, name string) *episode {
	return &episode{m: m, node: name, log: m.deps.Log.With("node", name), wake: make(chan struct{}, 1),
		notices: map[string]*notice{}, releasing: map[string]*retry{}}
}

func (e *episode) enqueue(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return
	}
	e.queue = append(e.queue, f)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *episode) next() func() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.queue) == 0 {
		return nil
	}
	f := e.queue[0]
	e.queue = e.queue[1:]
	return f
}

// later enqueues f after d, unless the Manager stops first.
func (e *episode) later(d time.Duration, f func()) {
	go func() {
		select {
		case <-e.ctx.Done():
		case <-e.m.deps.Clock.After(d):
			e.enqueue(f)
		}
	}()
}

// loop runs the episode until it ends or the Manager stops.
func (e *episode) loop(ctx context.Context) {
	e.ctx = ctx
	for {
		for f := e.next(); f != nil; f = e.next() {
			f()
		}
		if e.idle() && e.m.end(e) {
			e.m.deps.Notifier.Forget(e.node)
			if e.instance != "" {
				e.m.deps.Notifier.Forget(e.instance)
			}
			e.log.Debug("interruption episode over")
			return
		}
		var done <-chan struct{}
		if e.run != nil {
			done = e.run.drain.Done()
		}
		select {
		case <-e.wake:
		case <-done:
			e.finish()
		case <-ctx.Done():
			e.stop()
			return
		}
	}
}

// idle says whether nothing is left to do: no notice in force, no drain,
// no release to retry, no completer running.
func (e *episode) idle() bool {
	return len(e.notices) == 0 && e.run == nil && len(e.releasing) == 0 && e.busy == 0
}

// stop ends the episode as the Manager stops: the drain is stopped and
// waited for, holds stay, and open Tickets end Interrupted.
func (e *episode) stop() {
	if e.run != nil {
		e.run.cancel()
		<-e.run.drain.Done()
		e.run.keepAlive()
		e.run = nil
	}
	for _, n := range e.notices {
		n.endTickets(Ending{Interrupted: true})
	}
	e.m.mu.Lock()
	e.mu.Lock()
	e.ended = true
	e.mu.Unlock()
	delete(e.m.episodes, e.node)
	e.m.mu.Unlock()
}

// finish handles the end of the drain pass.
func (e *episode) finish() {
	run := e.run
	e.run = nil
	run.keepAlive()
	run.cancel()
	res, err := run.drain.Result()
	outcome := res.Outcome
	if e.gone {
		outcome = drain.NodeGone
	}
	m := e.m
	m.metrics.actions.WithLabelValues("drain", outcome.Label()).Inc()
	took := m.deps.Clock.Since(run.start)
	log := e.log.With("took", took, "evicted", res.Evicted, "skipped", res.Skipped, "outcome", outcome.Label())
	switch outcome {
	case drain.Cancelled:
		log.Info("drain stopped: its notices were withdrawn")
	case drain.NodeGone:
		log.Info("drain stopped: the node is gone")
	case drain.Drained, drain.DryRun:
		log.Info("drain finished")
		e.event(corev1.EventTypeNormal, "DrainCompleted", "drained in %s: %s", took.Round(time.Millisecond), res.Summary())
	default:
		log.Error("drain failed", "err", err, "remaining", res.Remaining)
		e.event(corev1.EventTypeWarning, "DrainFailed", "drain ended after %s with %d pods left (%s): %v",
			took.Round(time.Millisecond), len(res.Remaining), joinFirst(res.Remaining, 5), err)
	}
	covered := slices.Sorted(maps.Keys(run.covers))
	if outcome != drain.Cancelled && outcome != drain.NodeGone {
		if err := m.deps.Nodes.RecordDrain(e.ctx, e.node, outcome.Label(), covered...); err != nil {
			log.Warn("recording the drain's outcome on the node failed", "err", err)
		}
		var first *notice
		for _, id := range covered {
			if nt := e.notices[id]; nt != nil && first == nil {
				first = nt
			}
		}
		if first != nil {
			n := e.notification(notify.PhaseFinished, first)
			n.Deadline, n.Result, n.Evicted, n.Remaining, n.Took = res.Deadline, outcome.Label(), res.Evicted, len(res.Remaining), took
			m.deps.Notifier.Notify(n)
		}
	}
	for _, id := range covered {
		if nt := e.notices[id]; nt != nil {
			e.complete(nt, outcome)
		}
	}
	if e.gone {
		e.endAll()
		return
	}
	// A drain notice held while the pass ran, or one left when a pass
	// was stopped for a withdrawn notice, starts the next pass.
	e.plan()
}

// complete ends nt's part with outcome: its completer runs (not in a dry
// run), then its Tickets end.
func (e *episode) complete(nt *notice, outcome drain.Outcome) {
	if outcome == drain.Cancelled {
		nt.finish(Ending{Outcome: outcome, Interrupted: true})
		return
	}
	c := nt.Completer
	if c == nil {
		nt.finish(Ending{Outcome: outcome})
		return
	}
	if e.m.opts.DryRun {
		e.log.Info("dry run: would complete", "id", nt.ID, "completer", c.Name(), "outcome", outcome.Label())
		nt.finish(Ending{Outcome: outcome})
		return
	}
	e.busy++
	nt.completing = true
	go func() {
		if w := e.m.deps.Volumes; w != nil && outcome.Finished() {
			e.waitVolumes(w, c, nt.deadline)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), e.m.opts.CompleteTimeout)
		defer cancel()
		err := c.Complete(ctx, outcome)
		e.enqueue(func() {
			e.busy--
			result := "success"
			if err != nil {
				result = "failure"
				e.log.Error("completing failed", "id", nt.ID, "completer", c.Name(), "outcome", outcome.Label(), "err", err)
			} else {
				e.log.Info("completed", "id", nt.ID, "completer", c.Name(), "outcome", outcome.Label())
			}
			e.m.metrics.actions.WithLabelValues("complete", result).Inc()
			nt.completing = false
			nt.finish(Ending{Outcome: outcome, CompleteErr: err})
		})
	}()
}

// waitVolumes waits, before c lets the cloud take the instance, for the
// node's volumes to be detached, until deadline (or the Manager stops),
// keeping c's action alive while some are attached. It runs beside the
// episode's loop.
func (e *episode) waitVolumes(w VolumeWaiter, c Completer, deadline time.Time) {
	ctx, stop := context.WithCancel(e.ctx)
	kept := make(chan struct{})
	keeping := false
	res := w.Wait(ctx, e.node, deadline, func() {
		keeping = true
		go func() {
			defer close(kept)
			c.KeepAlive(ctx)
		}()
	})
	stop()
	if keeping {
		<-kept
	}
	log := e.log.With("outcome", res.Outcome, "took", res.Took, "attached", len(res.Attached))
	switch res.Outcome {
	case volumes.OutcomeNone:
		log.Debug("no volume attached to the drained node")
	case volumes.OutcomeDetached:
		log.Info("the drained node's volumes are detached")
		e.event(corev1.EventTypeNormal, "VolumesDetached", "%s", res.Summary())
	case volumes.OutcomeDeadline:
		log.Warn("volumes still attached at the deadline; letting the instance go", "left", res.Left)
		e.event(corev1.EventTypeWarning, "VolumesStillAttached", "%s", res.Summary())
	default:
		log.Warn("the node's volume attachments could not be read; letting the instance go", "err", res.Err)
		e.event(corev1.EventTypeWarning, "VolumesUnknown", "%s", res.Summary())
	}
}

// finish records nt's ending and ends its Tickets.
func (nt *notice) finish(end Ending) {
	nt.ending = &end
	nt.endTickets(end)
}

func (nt *notice) endTickets(end Ending) {
	for _, t := range nt.tickets {
		t.end(end)
	}
	nt.tickets = nil
}

func (e *episode) event(typ, reason, format string, args ...any) {
	e.m.deps.Events.Eventf(node.Ref(e.node), typ, reason, format, args...)
}

func (e *episode) notification(phase notify.Phase, nt *notice) notify.Notification {
	n := notify.Notification{Phase: phase, Node: e.node, Instance: nt.Instance, Kind: string(nt.Kind),
		Action: string(nt.Action), Source: nt.Source, Detail: nt.Detail, Deadline: nt.Deadline, Mode: string(e.m.deps.Nodes.Owner())}
	if nt.Action == interruption.ActionDrain {
		n.Deadline = e.earliest()
	}
	if n.Instance == "" {
		n.Instance = e.instance
	}
	return n
}
