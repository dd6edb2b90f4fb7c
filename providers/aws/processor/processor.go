// Package processor is the queue processor's work on one message: find the
// instance's node, take the node's lease, hold and drain it while the
// lifecycle action is kept alive, then complete the lifecycle action as an
// explicit last step.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/providers/aws/instances"
	"github.com/lastcall/lastcall/providers/aws/messages"
	"github.com/lastcall/lastcall/providers/aws/queue"
)

// Nodes maps instances to nodes (see package instances).
type Nodes interface {
	NodeFor(ctx context.Context, instanceID string) (string, error)
	Node(name string) (*corev1.Node, bool)
}

// NodeClient changes nodes (see package node).
type NodeClient interface {
	Hold(ctx context.Context, name string, ev interruption.Event) (node.Change, error)
	RecordDrain(ctx context.Context, name, id, result string) error
	State(ctx context.Context, name string) (node.State, *corev1.Node, error)
}

// Drainer empties a node (see package drain).
type Drainer interface {
	Drain(ctx context.Context, req drain.Request) (drain.Result, error)
}

// Locker gives exclusive work on a node (see package lease).
type Locker interface {
	Acquire(ctx context.Context, node string) (*lease.Held, error)
}

// Lifecycle keeps alive and completes Auto Scaling lifecycle actions.
type Lifecycle interface {
	KeepAlive(ctx context.Context, a messages.LifecycleAction) error
	// Complete returns an error wrapping ErrNoActiveAction when the action
	// is already gone.
	Complete(ctx context.Context, a messages.LifecycleAction, result string) error
}

// Notifier tells a webhook of interruptions (see package notify).
type Notifier interface {
	Notify(notify.Notification)
}

// The results of a lifecycle action.
const (
	Continue = "CONTINUE"
	Abandon  = "ABANDON"
)

// Options tune the processor.
type Options struct {
	// FallbackDeadline bounds drains whose message names no deadline.
	FallbackDeadline time.Duration
	// FailureResult completes a lifecycle action whose drain failed:
	// CONTINUE (the default) or ABANDON.
	FailureResult string
	// RetryAfter is how soon a message that could not be worked on now
	// (the node is busy with another replica, the API failed) reappears.
	RetryAfter time.Duration
	// LaunchRetryAfter is how soon a launch message reappears while its
	// node has not joined or is not Ready.
	LaunchRetryAfter time.Duration
	// Notifier, if set, is told when a message holds a node and when the
	// node's drain ends.
	Notifier Notifier
}

// Processor handles queue deliveries.
type Processor struct {
	opts      Options
	nodes     Nodes
	client    NodeClient
	drainer   Drainer
	leases    Locker
	lifecycle Lifecycle
	events    record.EventRecorder
	metrics   *metrics
	log       *slog.Logger
	clock     clock.Clock
}

// New returns a Processor.
func New(opts Options, nodes Nodes, client NodeClient, drainer Drainer, leases Locker, lc Lifecycle,
	events record.EventRecorder, reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) *Processor {
	if opts.Notifier == nil {
		opts.Notifier = noNotifier{}
	}
	return &Processor{opts: opts, nodes: nodes, client: client, drainer: drainer, leases: leases, lifecycle: lc,
		events: events, metrics: newMetrics(reg), log: log, clock: clk}
}

// completeTimeout bounds completing a lifecycle action, retries included.
const completeTimeout = 2 * time.Minute

// ErrNoActiveAction is what Lifecycle.Complete wraps when the action is gone.
var ErrNoActiveAction = errors.New("no active lifecycle action")

// Handle implements queue.Handler.
func (p *Processor) Handle(ctx context.Context, d queue.Delivery) queue.Outcome {
	msg, err := messages.Parse(d.Body)
	if err != nil {
		p.metrics.received.WithLabelValues("unparsable").Inc()
		p.log.Warn("message cannot be parsed and will never be; deleting it", "message_id", d.MessageID,
			"parse_error", messages.ReasonOf(err), "err", err)
		return queue.Done("unparsable")
	}
	p.metrics.received.WithLabelValues(msg.Kind).Inc()
	if !msg.Time.IsZero() {
		p.metrics.lag.Observe(max(0, p.clock.Since(msg.Time).Seconds()))
	}
	log := p.log.With("message_id", d.MessageID, "kind", msg.Kind, "event_id", msg.ID, "instances", msg.InstanceIDs)
	if msg.Verdict == messages.Ignore {
		log.Info("nothing to do for this message", "reason", msg.Reason)
		return queue.Done(msg.Reason)
	}
	if len(msg.InstanceIDs) == 1 {
		return p.handleInstance(ctx, msg, msg.InstanceIDs[0], log)
	}
	// A Health event may name many instances: work on them together, and
	// keep the message until every one is done.
	outs := make([]queue.Outcome, len(msg.InstanceIDs))
	var wg sync.WaitGroup
	for i, id := range msg.InstanceIDs {
		wg.Go(func() { outs[i] = p.handleInstance(ctx, msg, id, log.With("instance", id)) })
	}
	wg.Wait()
	for _, o := range outs {
		if !o.Delete {
			return o
		}
	}
	return queue.Done("processed")
}

func (p *Processor) handleInstance(ctx context.Context, msg messages.Message, instanceID string, log *slog.Logger) queue.Outcome {
	name, err := p.nodes.NodeFor(ctx, instanceID)
	switch {
	case errors.Is(err, instances.ErrNotOurs):
		log.Info("instance belongs to another cluster; deleting the message", "err", err)
		return queue.Done("not-our-cluster")
	case errors.Is(err, instances.ErrUnknownInstance):
		if msg.Verdict == messages.CompleteLaunch {
			log.Info("launching instance has not joined yet", "err", err)
			return queue.Retry("node-not-joined", p.opts.LaunchRetryAfter)
		}
		if msg.Lifecycle != nil {
			// Ours, but no node to drain: let the Auto Scaling group go on.
			p.complete(ctx, msg, Continue, drainNotApplicable, log)
		}
		log.Info("no node runs this instance; deleting the message", "err", err)
		return queue.Done("unknown-instance")
	case err != nil:
		log.Warn("finding the instance's node failed; will retry", "err", err)
		return queue.Retry("lookup-failed", p.opts.RetryAfter)
	}
	log = log.With("node", name)
	if msg.Verdict == messages.CompleteLaunch {
		return p.completeLaunch(ctx, msg, name, log)
	}

	held, err := p.leases.Acquire(ctx, name)
	if errors.Is(err, lease.ErrHeld) {
		log.Info("another replica is working on this node; will retry", "err", err)
		return queue.Retry("node-busy", p.opts.RetryAfter)
	}
	if err != nil {
		log.Warn("taking the node's lease failed; will retry", "err", err)
		return queue.Retry("lease-failed", p.opts.RetryAfter)
	}
	defer held.Release(context.WithoutCancel(ctx))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-held.Lost():
			cancel()
		case <-wctx.Done():
		}
	}()
	out := p.holdAndDrain(wctx, msg, instanceID, name, log)
	select {
	case <-held.Lost():
		return queue.Retry("lease-lost", p.opts.RetryAfter)
	default:
	}
	return out
}

func (p *Processor) holdAndDrain(ctx context.Context, msg messages.Message, instanceID, name string, log *slog.Logger) queue.Outcome {
	action := interruption.ActionDrain
	if msg.Verdict == messages.Cordon {
		action = interruption.ActionCordon
	}
	ev := interruption.Event{
		ID: interruption.NewID(msg.Interruption, msg.ID, instanceID), Source: "sqs", Kind: msg.Interruption,
		Action: action, Deadline: msg.Deadline, Observed: p.clock.Now(), Detail: msg.Detail,
	}
	ch, err := p.client.Hold(ctx, name, ev)
	if err != nil {
		p.metrics.actions.WithLabelValues("cordon", "failure").Inc()
		log.Error("cordoning node failed; will retry", "err", err)
		return queue.Retry("hold-failed", p.opts.RetryAfter)
	}
	if !ch.Unchanged {
		p.metrics.actions.WithLabelValues("cordon", "success").Inc()
		p.nodeEvent(name, corev1.EventTypeWarning, "InterruptionNotice", "%s from SQS (%s): %s", msg.Interruption, msg.Kind, msg.Detail)
		log.Info("node held", "id", ev.ID)
		deadline := msg.Deadline
		if action == interruption.ActionDrain {
			deadline = drain.Deadline(msg.Deadline, p.clock.Now(), p.opts.FallbackDeadline)
		}
		p.opts.Notifier.Notify(notify.Notification{Phase: notify.PhaseReceived, Node: name, Instance: instanceID,
			Kind: string(ev.Kind), Action: string(action), Source: ev.Source, Detail: msg.Detail, Deadline: deadline, Mode: mode})
	}
	if action == interruption.ActionCordon {
		return queue.Done("processed")
	}

	result := p.drainOnce(ctx, msg, ev, instanceID, name, log)
	if ctx.Err() != nil {
		return queue.Retry("interrupted", p.opts.RetryAfter)
	}
	if msg.Lifecycle != nil {
		lr, drained := Continue, drainFinished
		if result != "success" && result != "dry_run" {
			drained = drainUnfinished
			if p.opts.FailureResult == Abandon {
				lr = Abandon
			}
		}
		p.complete(ctx, msg, lr, drained, log)
	}
	return queue.Done("processed")
}

// drainOnce drains the node unless a drain of it already succeeded (for
// another event about the same instance), keeping the lifecycle action
// alive meanwhile. It returns the drain's result label.
func (p *Processor) drainOnce(ctx context.Context, msg messages.Message, ev interruption.Event, instanceID, name string, log *slog.Logger) string {
	if st, _, err := p.client.State(ctx, name); err == nil {
		for _, h := range st.Holds {
			if h.Drain == "success" {
				log.Info("node already drained for an earlier event; not draining again", "earlier", h.ID)
				return "success"
			}
		}
	}
	dctx, stopKeepAlive := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if msg.Lifecycle != nil {
		wg.Go(func() {
			if err := p.lifecycle.KeepAlive(dctx, *msg.Lifecycle); errors.Is(err, ErrNoActiveAction) {
				log.Warn("lifecycle action gone while draining; heartbeats stopped", "err", err)
			}
		})
	}
	deadline := drain.Deadline(msg.Deadline, p.clock.Now(), p.opts.FallbackDeadline)
	p.nodeEvent(name, corev1.EventTypeNormal, "DrainStarted", "draining for %s; deadline %s", ev.Kind, deadline.UTC().Format(time.RFC3339))
	start := p.clock.Now()
	res, err := p.drainer.Drain(ctx, drain.Request{Node: name, Kind: string(ev.Kind), Deadline: deadline,
		Why: fmt.Sprintf("%s of node %s", ev.Kind, name)})
	stopKeepAlive()
	wg.Wait()
	result := drain.ResultLabel(res, err)
	p.metrics.actions.WithLabelValues("drain", result).Inc()
	took := p.clock.Since(start)
	if result == "cancelled" {
		log.Info("drain interrupted; the message will reappear", "took", took)
		return result
	}
	if err != nil {
		log.Error("drain failed", "err", err, "took", took, "remaining", res.Remaining)
		p.nodeEvent(name, corev1.EventTypeWarning, "DrainFailed", "drain ended after %s with %d pods left: %v", took.Round(time.Millisecond), len(res.Remaining), err)
	} else {
		log.Info("drain finished", "took", took, "evicted", res.Evicted)
		p.nodeEvent(name, corev1.EventTypeNormal, "DrainCompleted", "drained in %s: %s", took.Round(time.Millisecond), res.Summary())
	}
	if err := p.client.RecordDrain(context.WithoutCancel(ctx), name, ev.ID, result); err != nil {
		log.Warn("recording drain result on node failed", "err", err)
	}
	p.opts.Notifier.Notify(notify.Notification{Phase: notify.PhaseFinished, Node: name, Instance: instanceID,
		Kind: string(ev.Kind), Action: string(ev.Action), Source: ev.Source, Detail: msg.Detail, Deadline: deadline,
		Result: result, Evicted: res.Evicted, Remaining: len(res.Remaining), Took: took, Mode: mode})
	return result
}

// mode is the processor's mode, as notifications name it.
const mode = "queue"

// noNotifier is the Notifier of a processor given none.
type noNotifier struct{}

func (noNotifier) Notify(notify.Notification) {}

func (p *Processor) completeLaunch(ctx context.Context, msg messages.Message, name string, log *slog.Logger) queue.Outcome {
	n, ok := p.nodes.Node(name)
	if !ok || !ready(n) {
		log.Info("launched node not Ready yet; will retry")
		return queue.Retry("node-not-ready", p.opts.LaunchRetryAfter)
	}
	p.complete(ctx, msg, Continue, drainNotApplicable, log)
	p.metrics.actions.WithLabelValues("complete_launch", "success").Inc()
	return queue.Done("processed")
}

// What a lifecycle action's node had been through when it was completed: a
// bounded label of lastcall_lifecycle_completions_total.
const (
	drainFinished      = "finished"
	drainUnfinished    = "unfinished"
	drainNotApplicable = "not_applicable"
)

// complete is the explicit last step: complete the lifecycle action.
// drained says whether the node's drain finished first.
func (p *Processor) complete(ctx context.Context, msg messages.Message, result, drained string, log *slog.Logger) {
	if msg.Lifecycle == nil {
		return
	}
	// Completing must outlive a shutdown that interrupts the drain, but
	// not hang it: a failure that never clears (a missing permission) is
	// given up after completeTimeout; the action then times out in AWS
	// with its default result.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	err := p.lifecycle.Complete(cctx, *msg.Lifecycle, result)
	switch {
	case errors.Is(err, ErrNoActiveAction):
		log.Warn("lifecycle action was already gone (completed elsewhere or timed out)", "result", result, "err", err)
	case err != nil:
		log.Error("completing lifecycle action failed", "result", result, "err", err)
	default:
		p.metrics.completions.WithLabelValues(result, drained).Inc()
		if drained == drainUnfinished {
			log.Warn("lifecycle action completed before the drain finished", "result", result, "hook", msg.Lifecycle.HookName, "group", msg.Lifecycle.GroupName)
			return
		}
		log.Info("lifecycle action completed", "result", result, "drain", drained, "hook", msg.Lifecycle.HookName, "group", msg.Lifecycle.GroupName)
	}
}

func (p *Processor) nodeEvent(name, typ, reason, format string, args ...any) {
	p.events.Eventf(node.Ref(name), typ, reason, format, args...)
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
