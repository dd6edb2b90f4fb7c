// Package agent is the node agent: it watches this node's interruption
// sources and holds, drains and releases the node as notices come and go.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
)

// NodeClient changes the node (see package node).
type NodeClient interface {
	Hold(ctx context.Context, name string, ev interruption.Event) (node.Change, error)
	Release(ctx context.Context, name, id string) (node.Change, error)
	RecordDrain(ctx context.Context, name, id, result string) error
	State(ctx context.Context, name string) (node.State, *corev1.Node, error)
}

// Drainer empties the node (see package drain).
type Drainer interface {
	Drain(ctx context.Context, req drain.Request) (drain.Result, error)
}

// Notifier tells a webhook of interruptions (see package notify).
type Notifier interface {
	Notify(notify.Notification)
	// Forget ends the node's episode: its next interruption is told again.
	Forget(key string)
}

// Options tune the agent.
type Options struct {
	// Node is the name of the node the agent runs on.
	Node string
	// FallbackDeadline is the deadline of a drain whose notice names none.
	FallbackDeadline time.Duration
	// RetryInterval is the wait before retrying a failed hold or release.
	RetryInterval time.Duration
	// Notifier, if set, is told when a notice holds the node and when its
	// drain ends.
	Notifier Notifier
}

// Agent reacts to the interruption events of one node.
type Agent struct {
	opts    Options
	sources []interruption.Source
	nodes   NodeClient
	drainer Drainer
	events  record.EventRecorder
	synced  <-chan struct{}
	metrics *metrics
	log     *slog.Logger
	clock   clock.Clock

	ackers  map[string]interruption.Acknowledger // sources that acknowledge, by name
	active  map[string]interruption.Event        // notices in force, by ID
	drained map[string]bool                      // IDs whose drain has finished
	drain   *runningDrain
	done    chan drainOutcome
	retry   chan interruption.Event
}

type runningDrain struct {
	event  interruption.Event
	cancel context.CancelFunc
}

type drainOutcome struct {
	event    interruption.Event
	deadline time.Time
	res      drain.Result
	err      error
	took     time.Duration
}

// New returns an Agent. synced is closed once every source has read its
// signal once; the agent then releases holds whose notice is gone.
func New(opts Options, sources []interruption.Source, nodes NodeClient, drainer Drainer, events record.EventRecorder,
	synced <-chan struct{}, reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) *Agent {
	if opts.RetryInterval == 0 {
		opts.RetryInterval = time.Second
	}
	if opts.Notifier == nil {
		opts.Notifier = noNotifier{}
	}
	ackers := map[string]interruption.Acknowledger{}
	for _, s := range sources {
		if a, ok := s.(interruption.Acknowledger); ok {
			ackers[s.Name()] = a
		}
	}
	return &Agent{
		opts: opts, sources: sources, nodes: nodes, drainer: drainer, events: events, synced: synced,
		metrics: newMetrics(reg), log: log, clock: clk, ackers: ackers,
		active: map[string]interruption.Event{}, drained: map[string]bool{},
		done: make(chan drainOutcome, 1), retry: make(chan interruption.Event, 16),
	}
}

// Run watches every source until ctx ends, then stops a running drain and
// returns once everything it started has returned.
func (a *Agent) Run(ctx context.Context) error {
	in := make(chan interruption.Event, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, s := range a.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx, in); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("source stopped", "source", s.Name(), "err", err)
			}
		}()
	}
	synced := a.synced
	var reconcileNow <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if a.drain != nil {
				a.drain.cancel()
				<-a.done
			}
			return nil
		case ev := <-in:
			a.receive(ctx, ev)
		case ev := <-a.retry:
			if _, ok := a.active[ev.ID]; ok || ev.Action == interruption.ActionCancel {
				a.handle(ctx, ev) // a hold whose notice was withdrawn meanwhile is dropped
			}
		case <-synced:
			// Sources report their first read after sending what it
			// found, so those notices are queued by now: handle them
			// before deciding which holds are stale.
			synced = nil
			reconcileNow = a.clock.After(0)
		case <-reconcileNow:
			reconcileNow = nil
			for pending := true; pending; {
				select {
				case ev := <-in:
					a.receive(ctx, ev)
				default:
					pending = false
				}
			}
			if !a.reconcile(ctx) {
				reconcileNow = a.clock.After(a.opts.RetryInterval)
			}
		case out := <-a.done:
			a.finish(ctx, out)
		}
	}
}

func (a *Agent) receive(ctx context.Context, ev interruption.Event) {
	a.metrics.received.WithLabelValues(ev.Source, string(ev.Kind), string(ev.Action)).Inc()
	a.log.Info("interruption notice", "source", ev.Source, "kind", ev.Kind, "action", ev.Action,
		"id", ev.ID, "deadline", ev.Deadline, "detail", ev.Detail)
	a.handle(ctx, ev)
}

func (a *Agent) handle(ctx context.Context, ev interruption.Event) {
	switch ev.Action {
	case interruption.ActionCancel:
		a.cancel(ctx, ev)
		return
	case interruption.ActionNotify:
		// The VM survives this one (a live migration, a freeze): say so,
		// change nothing.
		a.nodeEvent(corev1.EventTypeNormal, "MaintenanceNotice", "%s from %s: %s; the node stays in service", ev.Kind, ev.Source, describe(ev))
		a.log.Info("notice needs no action", "node", a.opts.Node, "id", ev.ID, "kind", ev.Kind, "detail", ev.Detail)
		return
	}
	a.active[ev.ID] = ev
	ch, err := a.nodes.Hold(ctx, a.opts.Node, ev)
	if err != nil {
		a.metrics.actions.WithLabelValues("cordon", "failure").Inc()
		a.log.Error("cordoning node failed, will retry", "node", a.opts.Node, "id", ev.ID, "err", err, "retry_in", a.opts.RetryInterval)
		a.later(ctx, ev)
		return
	}
	if !ch.Unchanged {
		a.notifyReceived(ev)
	}
	if ch.DryRun {
		a.metrics.actions.WithLabelValues("cordon", "dry_run").Inc()
		a.log.Info("dry run: would hold node", "node", a.opts.Node, "id", ev.ID, "kind", ev.Kind, "changes", changes(ch))
	} else if !ch.Unchanged {
		a.metrics.noticeToCordon.Observe(a.clock.Since(ev.Observed).Seconds())
		a.metrics.actions.WithLabelValues("cordon", "success").Inc()
		a.nodeEvent(corev1.EventTypeWarning, "InterruptionNotice", "%s from %s: %s", ev.Kind, ev.Source, describe(ev))
		a.nodeEvent(corev1.EventTypeNormal, "Cordoned", "lastcall holds the node for %s (taint %s): %s",
			ev.Kind, node.TaintKey(ev.Kind), changes(ch))
		a.log.Info("node held", "node", a.opts.Node, "id", ev.ID, "kind", ev.Kind, "changes", changes(ch),
			"since_notice", a.clock.Since(ev.Observed))
	}
	if ev.Action == interruption.ActionDrain && a.drain == nil && !a.drained[ev.ID] {
		a.startDrain(ctx, ev)
	}
}

func (a *Agent) cancel(ctx context.Context, ev interruption.Event) {
	_, wasActive := a.active[ev.ID]
	delete(a.active, ev.ID)
	if a.drain != nil && a.drain.event.ID == ev.ID {
		a.drain.cancel()
	}
	ch, err := a.nodes.Release(ctx, a.opts.Node, ev.ID)
	if err != nil {
		a.metrics.actions.WithLabelValues("uncordon", "failure").Inc()
		a.log.Error("releasing node failed, will retry", "node", a.opts.Node, "id", ev.ID, "err", err)
		a.later(ctx, ev)
		return
	}
	if len(a.active) == 0 && (wasActive || !ch.Unchanged) {
		// The node's last notice is withdrawn: the episode is over, and a
		// new interruption of the node is told again.
		a.opts.Notifier.Forget(a.opts.Node)
	}
	if ch.Unchanged {
		return
	}
	if ch.DryRun {
		a.metrics.actions.WithLabelValues("uncordon", "dry_run").Inc()
		a.log.Info("dry run: would release node", "node", a.opts.Node, "id", ev.ID, "changes", changes(ch))
		return
	}
	a.metrics.actions.WithLabelValues("uncordon", "success").Inc()
	a.nodeEvent(corev1.EventTypeNormal, "InterruptionCancelled", "%s %s withdrawn; lastcall undid its own changes (%s)", ev.Kind, ev.ID, changes(ch))
	a.log.Info("node released", "node", a.opts.Node, "id", ev.ID, "changes", changes(ch))
}

// reconcile releases holds left on the node by an earlier run (before a
// restart or a reboot) whose notice is no longer in force. It returns false
// if the node's state could not be read, to be tried again.
func (a *Agent) reconcile(ctx context.Context) bool {
	st, _, err := a.nodes.State(ctx, a.opts.Node)
	if err != nil {
		a.log.Error("reading lastcall state from node failed, will retry", "node", a.opts.Node, "err", err, "retry_in", a.opts.RetryInterval)
		return false
	}
	for _, h := range st.Holds {
		if _, ok := a.active[h.ID]; ok {
			continue
		}
		a.log.Info("notice no longer in force, releasing its hold", "node", a.opts.Node, "id", h.ID, "kind", h.Kind, "since", h.Since)
		a.cancel(ctx, interruption.Event{ID: h.ID, Kind: h.Kind, Action: interruption.ActionCancel, Source: "reconcile"})
	}
	return true
}

func (a *Agent) startDrain(ctx context.Context, ev interruption.Event) {
	deadline := drain.Deadline(ev.Deadline, a.clock.Now(), a.opts.FallbackDeadline)
	if !ev.Deadline.IsZero() && !deadline.Equal(ev.Deadline) {
		a.log.Warn("notice deadline already passed, draining with the fallback deadline",
			"id", ev.ID, "deadline", ev.Deadline, "fallback", a.opts.FallbackDeadline)
	}
	dctx, cancel := context.WithCancel(ctx)
	a.drain = &runningDrain{event: ev, cancel: cancel}
	a.nodeEvent(corev1.EventTypeNormal, "DrainStarted", "draining for %s; deadline %s (in %s)",
		ev.Kind, deadline.UTC().Format(time.RFC3339), deadline.Sub(a.clock.Now()).Round(time.Second))
	a.log.Info("drain started", "node", a.opts.Node, "id", ev.ID, "deadline", deadline)
	start := a.clock.Now()
	req := drain.Request{Node: a.opts.Node, Kind: string(ev.Kind), Deadline: deadline, Why: fmt.Sprintf("%s of node %s", ev.Kind, a.opts.Node)}
	go func() {
		res, err := a.drainer.Drain(dctx, req)
		a.done <- drainOutcome{event: ev, deadline: deadline, res: res, err: err, took: a.clock.Since(start)}
	}()
}

func (a *Agent) finish(ctx context.Context, out drainOutcome) {
	a.drain = nil
	result := drain.ResultLabel(out.res, out.err)
	a.metrics.actions.WithLabelValues("drain", result).Inc()
	log := a.log.With("node", a.opts.Node, "id", out.event.ID, "took", out.took, "evicted", out.res.Evicted,
		"skipped", out.res.Skipped, "result", result)
	switch result {
	case "cancelled":
		log.Info("drain stopped: notice withdrawn or shutting down")
	case "success", "dry_run":
		a.drained[out.event.ID] = true
		log.Info("drain finished")
		a.nodeEvent(corev1.EventTypeNormal, "DrainCompleted", "drained in %s: %s",
			out.took.Round(time.Millisecond), out.res.Summary())
		if result == "success" {
			a.acknowledge(ctx, out.event)
		}
	default:
		a.drained[out.event.ID] = true
		log.Error("drain failed", "err", out.err, "remaining", out.res.Remaining)
		a.nodeEvent(corev1.EventTypeWarning, "DrainFailed", "drain ended after %s with %d pods left (%s): %v",
			out.took.Round(time.Millisecond), len(out.res.Remaining), strings.Join(first(out.res.Remaining, 5), ", "), out.err)
	}
	if result != "cancelled" {
		if err := a.nodes.RecordDrain(ctx, a.opts.Node, out.event.ID, result); err != nil {
			log.Warn("recording drain result on node failed", "err", err)
		}
		a.opts.Notifier.Notify(notify.Notification{Phase: notify.PhaseFinished, Node: a.opts.Node, Kind: string(out.event.Kind),
			Action: string(out.event.Action), Source: out.event.Source, Detail: out.event.Detail, Deadline: out.deadline,
			Result: result, Evicted: out.res.Evicted, Remaining: len(out.res.Remaining), Took: out.took, Mode: mode})
	}
	if ctx.Err() != nil {
		return
	}
	// A notice that arrived while this drain ran, or whose drain was
	// stopped with a withdrawn one, may still need its own.
	for id, ev := range a.active {
		if ev.Action == interruption.ActionDrain && !a.drained[id] {
			a.startDrain(ctx, ev)
			return
		}
	}
}

// acknowledge tells the platform, where the event's source can, that the
// node is drained and it may proceed early: an explicit step, like
// completing a lifecycle action.
func (a *Agent) acknowledge(ctx context.Context, ev interruption.Event) {
	ack, ok := a.ackers[ev.Source]
	if !ok {
		return
	}
	if err := ack.Acknowledge(ctx, ev); err != nil {
		a.metrics.actions.WithLabelValues("acknowledge", "failure").Inc()
		a.log.Error("acknowledging the notice failed; the platform will proceed at its deadline", "id", ev.ID, "source", ev.Source, "err", err)
		return
	}
	a.metrics.actions.WithLabelValues("acknowledge", "success").Inc()
	a.log.Info("notice acknowledged: the platform may proceed", "id", ev.ID, "source", ev.Source)
}

// mode is the agent's mode, as notifications name it.
const mode = "agent"

// notifyReceived tells the notifier that ev holds the node. The agent
// does not know its instance: the node names it, and the notifier's
// dedupe on the node gives one notification per node for all its notices.
func (a *Agent) notifyReceived(ev interruption.Event) {
	deadline := ev.Deadline
	if ev.Action == interruption.ActionDrain {
		deadline = drain.Deadline(ev.Deadline, a.clock.Now(), a.opts.FallbackDeadline)
	}
	a.opts.Notifier.Notify(notify.Notification{Phase: notify.PhaseReceived, Node: a.opts.Node, Kind: string(ev.Kind),
		Action: string(ev.Action), Source: ev.Source, Detail: ev.Detail, Deadline: deadline, Mode: mode})
}

// noNotifier is the Notifier of an agent given none.
type noNotifier struct{}

func (noNotifier) Notify(notify.Notification) {}
func (noNotifier) Forget(string)              {}

func (a *Agent) later(ctx context.Context, ev interruption.Event) {
	go func() {
		select {
		case <-ctx.Done():
		case <-a.clock.After(a.opts.RetryInterval):
			select {
			case a.retry <- ev:
			case <-ctx.Done():
			}
		}
	}()
}

func (a *Agent) nodeEvent(typ, reason, format string, args ...any) {
	a.events.Eventf(node.Ref(a.opts.Node), typ, reason, format, args...)
}

func describe(ev interruption.Event) string {
	s := ev.Detail
	if !ev.Deadline.IsZero() {
		s += fmt.Sprintf("; node goes at %s", ev.Deadline.UTC().Format(time.RFC3339))
	}
	return s + "; action " + string(ev.Action)
}

func changes(ch node.Change) string {
	var parts []string
	for _, c := range []struct {
		on   bool
		what string
	}{{ch.Tainted, "tainted"}, {ch.Cordoned, "cordoned"}, {ch.LBExcluded, "load-balancer label added"},
		{ch.Untainted, "taint removed"}, {ch.Uncordoned, "uncordoned"}, {ch.LBRestored, "load-balancer label removed"}} {
		if c.on {
			parts = append(parts, c.what)
		}
	}
	if len(parts) == 0 {
		return "nothing to change"
	}
	return strings.Join(parts, ", ")
}

func first(s []string, n int) []string { return s[:min(len(s), n)] }
