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
}

// Agent feeds the episode of one node from its sources.
type Agent struct {
	opts     Options
	episodes Episodes
	events   record.EventRecorder
	received *prometheus.CounterVec
	log      *slog.Logger
	clock    clock.Clock
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
	reg.MustRegister(received)
	return &Agent{opts: opts, episodes: episodes, events: events, received: received, log: log, clock: clk}
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
		err = a.episodes.Withdraw(a.opts.Node, ev)
	case interruption.ActionNotify:
		// The VM survives this one (a live migration, a freeze): say so,
		// change nothing.
		a.events.Eventf(node.Ref(a.opts.Node), corev1.EventTypeNormal, "MaintenanceNotice",
			"%s from %s: %s; the node stays in service", ev.Kind, ev.Source, ev.Detail)
	default:
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
