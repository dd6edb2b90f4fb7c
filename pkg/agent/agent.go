// Package agent is the node agent's front end: it watches this node's
// interruption sources and turns what they see into notices of the node's
// interruption episode (package episode), which holds, drains and releases
// the node.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
)

// Episodes is what the agent feeds (an *episode.Manager).
type Episodes interface {
	Add(node string, n episode.Notice) (*episode.Ticket, error)
	Withdraw(node string, ev interruption.Event) error
	ReleaseStale(ctx context.Context, node string) error
}

// CompletingSource is a Source whose notices the cloud waits on after the
// drain (Azure's scheduled events, approved once the node is drained): it
// gives each notice its Completer, or nil.
type CompletingSource interface {
	interruption.Source
	Completer(ev interruption.Event) episode.Completer
}

// Options tune the agent.
type Options struct {
	// Node is the name of the node the agent runs on.
	Node string
	// RetryInterval is the wait before reading the node's holds again
	// when that failed at start-up.
	RetryInterval time.Duration
	// Pings, when not nil, are liveness pings (health.Loop): the main
	// loop answers each by closing it, between notices. Nothing the loop
	// does waits on the API server or the metadata service, so an
	// unanswered ping means the loop itself is stuck.
	Pings <-chan chan struct{}
	// RebalanceHoldTimeout, when positive, releases the hold of a
	// rebalance recommendation this long after the cloud issued it (or
	// after the agent first saw it, when the notice has no time), unless
	// the cloud withdrew it first. A recommendation stays listed in the
	// metadata once issued: without it, a node whose interruption never
	// comes stays cordoned until it is replaced.
	RebalanceHoldTimeout time.Duration
}

// Agent feeds the episode of one node from its sources.
type Agent struct {
	opts     Options
	episodes Episodes
	events   record.EventRecorder
	received *prometheus.CounterVec
	expiredN *prometheus.CounterVec
	log      *slog.Logger
	clock    clock.Clock

	// expiring are the holds RebalanceHoldTimeout will release, by notice
	// ID; expired are those it released, never held again.
	expiring map[string]expiring
	expired  map[string]bool
	// expireC fires when the earliest of expiring is due.
	expireC <-chan time.Time
}

type expiring struct {
	ev interruption.Event
	at time.Time
}

// New returns an Agent.
func New(opts Options, episodes Episodes, events record.EventRecorder, reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) *Agent {
	if opts.RetryInterval == 0 {
		opts.RetryInterval = time.Second
	}
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "lastcall", Name: "events_received_total",
		Help: "Interruption events received from the instance's metadata, by source, kind and action (cordon, drain, notify, cancel).",
	}, []string{"source", "kind", "action"})
	expired := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "lastcall", Name: "holds_expired_total",
		Help: "Holds released because no interruption followed in time (--rebalance-hold-timeout), by kind.",
	}, []string{"kind"})
	expired.WithLabelValues(string(interruption.KindRebalance))
	reg.MustRegister(received, expired)
	return &Agent{opts: opts, episodes: episodes, events: events, received: received, expiredN: expired, log: log, clock: clk,
		expiring: map[string]expiring{}, expired: map[string]bool{}}
}

// Run watches every source until ctx ends, and returns once they have
// stopped. synced is closed once every source has read its signal once:
// the notices in force are known then, and the holds the agent left
// before a restart whose notice is gone are released.
func (a *Agent) Run(ctx context.Context, sources []interruption.Source, synced <-chan struct{}) error {
	in := make(chan interruption.Event, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, s := range sources {
		wg.Go(func() {
			if err := s.Run(ctx, in); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("source stopped", "source", s.Name(), "err", err)
			}
		})
	}
	completers := map[string]CompletingSource{}
	for _, s := range sources {
		if c, ok := s.(CompletingSource); ok {
			completers[s.Name()] = c
		}
	}
	var releaseStale <-chan time.Time
	// The stale holds are released beside the loop: reading the node may
	// wait on the API server, and the loop must stay free to take notices
	// and answer pings meanwhile.
	var released chan error
	for {
		select {
		case <-ctx.Done():
			return nil
		case reply := <-a.opts.Pings:
			close(reply)
		case <-a.expireC:
			a.expireC = nil
			a.expireDue()
		case ev := <-in:
			a.receive(ev, completers)
		case <-synced:
			synced = nil
			// Sources report their first read after sending what it
			// found: handle those notices before judging which holds
			// are stale.
			for pending := true; pending; {
				select {
				case ev := <-in:
					a.receive(ev, completers)
				default:
					pending = false
				}
			}
			releaseStale = a.clock.After(0)
		case <-releaseStale:
			releaseStale = nil
			done := make(chan error, 1)
			released = done
			wg.Go(func() { done <- a.episodes.ReleaseStale(ctx, a.opts.Node) })
		case err := <-released:
			released = nil
			if err != nil && ctx.Err() == nil {
				a.log.Error("reading lastcall's holds on the node failed; will retry", "err", err, "retry_in", a.opts.RetryInterval)
				releaseStale = a.clock.After(a.opts.RetryInterval)
			}
		}
	}
}

func (a *Agent) receive(ev interruption.Event, completers map[string]CompletingSource) {
	a.received.WithLabelValues(ev.Source, string(ev.Kind), string(ev.Action)).Inc()
	a.log.Info("interruption notice", "source", ev.Source, "kind", ev.Kind, "action", ev.Action,
		"id", ev.ID, "deadline", ev.Deadline, "detail", ev.Detail)
	var err error
	switch ev.Action {
	case interruption.ActionCancel:
		if _, ok := a.expiring[ev.ID]; ok {
			delete(a.expiring, ev.ID)
			a.rearm()
		}
		err = a.episodes.Withdraw(a.opts.Node, ev)
	case interruption.ActionNotify:
		// The VM survives this one (a live migration, a freeze): say so,
		// change nothing.
		a.events.Eventf(node.Ref(a.opts.Node), corev1.EventTypeNormal, "MaintenanceNotice",
			"%s from %s: %s; the node stays in service", ev.Kind, ev.Source, ev.Detail)
	default:
		if a.expires(ev) {
			return
		}
		n := episode.Notice{Event: ev}
		if c, ok := completers[ev.Source]; ok {
			n.Completer = c.Completer(ev)
		}
		_, err = a.episodes.Add(a.opts.Node, n)
	}
	if err != nil {
		a.log.Warn("notice not handled: shutting down", "id", ev.ID, "err", err)
	}
}

// expires says whether ev is a rebalance recommendation whose hold
// RebalanceHoldTimeout has released, or would release already: it is not
// held (again). Otherwise it schedules the release of a rebalance hold.
func (a *Agent) expires(ev interruption.Event) bool {
	if ev.Kind != interruption.KindRebalance || a.opts.RebalanceHoldTimeout <= 0 {
		return false
	}
	if a.expired[ev.ID] {
		a.log.Debug("rebalance recommendation seen again after its hold expired: not held", "id", ev.ID)
		return true
	}
	start := ev.Issued
	if start.IsZero() {
		start = a.clock.Now()
	}
	at := start.Add(a.opts.RebalanceHoldTimeout)
	if !a.clock.Now().Before(at) {
		// Issued longer ago than the timeout (seen after a restart): any
		// hold an earlier run left goes too.
		a.expire(ev)
		return true
	}
	if _, ok := a.expiring[ev.ID]; !ok {
		a.expiring[ev.ID] = expiring{ev: ev, at: at}
		a.rearm()
	}
	return false
}

// expireDue releases the holds whose time is up.
func (a *Agent) expireDue() {
	now := a.clock.Now()
	for _, x := range a.expiring {
		if !now.Before(x.at) {
			a.expire(x.ev)
		}
	}
	a.rearm()
}

// expire releases ev's hold for good: no interruption followed it in time.
func (a *Agent) expire(ev interruption.Event) {
	delete(a.expiring, ev.ID)
	a.expired[ev.ID] = true
	a.expiredN.WithLabelValues(string(ev.Kind)).Inc()
	a.log.Info("no interruption followed the rebalance recommendation in time: its hold is released",
		"id", ev.ID, "issued", ev.Issued, "timeout", a.opts.RebalanceHoldTimeout)
	a.events.Eventf(node.Ref(a.opts.Node), corev1.EventTypeNormal, "HoldExpired",
		"%s %s: no interruption followed within %s (--rebalance-hold-timeout); lastcall releases its hold", ev.Kind, ev.ID, a.opts.RebalanceHoldTimeout)
	cancel := interruption.Event{ID: ev.ID, Kind: ev.Kind, Action: interruption.ActionCancel, Source: ev.Source}
	if err := a.episodes.Withdraw(a.opts.Node, cancel); err != nil {
		a.log.Warn("hold not released: shutting down", "id", ev.ID, "err", err)
	}
}

// rearm sets expireC to fire when the earliest hold in expiring is due.
func (a *Agent) rearm() {
	a.expireC = nil
	var first time.Time
	for _, x := range a.expiring {
		if first.IsZero() || x.at.Before(first) {
			first = x.at
		}
	}
	if !first.IsZero() {
		a.expireC = a.clock.After(max(first.Sub(a.clock.Now()), 0))
	}
}
