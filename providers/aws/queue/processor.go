package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/providers/aws/instances"
	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/messages"
)

// Nodes maps instances to nodes (see package instances).
type Nodes interface {
	NodeFor(ctx context.Context, instanceID string) (string, error)
	Node(name string) (*corev1.Node, bool)
}

// Episodes is what the handler feeds (an *episode.Manager).
type Episodes interface {
	Add(node string, n episode.Notice) (*episode.Ticket, error)
	Withdraw(node string, ev interruption.Event) error
	Drop(node, id string) error
}

// Locker gives this replica the right to work on a node (see package
// lease).
type Locker interface {
	Acquire(ctx context.Context, node string) (*lease.Held, error)
}

// Lifecycle keeps alive and completes Auto Scaling lifecycle actions (a
// *lifecycle.Completer).
type Lifecycle interface {
	KeepAlive(ctx context.Context, a messages.LifecycleAction) error
	Complete(ctx context.Context, a messages.LifecycleAction, result lifecycle.Result) error
}

// Hooks tells how long heartbeats can keep an action of a lifecycle hook
// alive (a *lifecycle.Hooks).
type Hooks interface {
	GlobalTimeout(ctx context.Context, group, hook string) (time.Duration, error)
}

// ProcessorOptions tune the Processor.
type ProcessorOptions struct {
	// FailureResult completes a lifecycle action whose drain did not
	// finish: CONTINUE (the default) or ABANDON.
	FailureResult lifecycle.Result
	// RetryAfter is how soon a message that could not be worked on now
	// (another replica holds the node, the API failed) reappears.
	RetryAfter time.Duration
	// LaunchRetryAfter is how soon a launch message reappears while its
	// node has not joined or is not Ready.
	LaunchRetryAfter time.Duration
	// LifecycleDeadline bounds the drain of a terminate lifecycle action,
	// which has no cloud deadline: counted from when the action began, at
	// most the hook's global timeout (how long heartbeats can keep it
	// alive). Budgets are honoured until then.
	LifecycleDeadline time.Duration
	// DryRun: no lifecycle action is completed or kept alive; messages
	// are deleted once their dry run is logged, as "dry-run".
	DryRun bool
	// OutOfService, when set, marks the node of an instance known to be
	// gone (terminated) out of service, so that Kubernetes deletes its
	// pods and detaches its volumes at once; it reports whether it
	// changed the node.
	OutOfService func(ctx context.Context, node string) (bool, error)
}

// Processor is the queue processor's front end: it turns each message into
// notices for the episodes of the instances' nodes, under the node's
// Lease, and waits for them to end before the message is deleted.
type Processor struct {
	opts      ProcessorOptions
	nodes     Nodes
	episodes  Episodes
	leases    Locker
	lifecycle Lifecycle
	hooks     Hooks
	carrier   Carrier
	metrics   *processorMetrics
	log       *slog.Logger
	clock     clock.Clock

	// carriers are the notices this replica carries on from their nodes
	// alone, keyed node/id.
	carriers sync.WaitGroup
	mu       sync.Mutex
	carrying map[string]bool
	// stopping ends when CarryOn returns: carriers stop following their
	// notices.
	stopping context.Context
	stop     context.CancelFunc
}

// NewProcessor returns a Processor.
func NewProcessor(opts ProcessorOptions, nodes Nodes, episodes Episodes, leases Locker, lc Lifecycle, hooks Hooks, carrier Carrier,
	reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) *Processor {
	if opts.FailureResult == "" {
		opts.FailureResult = lifecycle.Continue
	}
	stopping, stop := context.WithCancel(context.Background())
	return &Processor{opts: opts, nodes: nodes, episodes: episodes, leases: leases, lifecycle: lc, hooks: hooks, carrier: carrier,
		metrics: newProcessorMetrics(reg), log: log, clock: clk, carrying: map[string]bool{}, stopping: stopping, stop: stop}
}

// completeTimeout bounds completing a lifecycle action outside a drain,
// retries included.
const completeTimeout = 2 * time.Minute

// Handle implements Handler. In a dry run, a message is deleted once its
// work has been logged, as "dry-run".
func (h *Processor) Handle(ctx context.Context, d Delivery) Outcome {
	out := h.handle(ctx, d)
	if h.opts.DryRun && out.Delete {
		out.Reason = reasonDryRun
	}
	return out
}

// reasonHandedOver is why a message whose drain its node carries on is
// deleted.
const reasonHandedOver = "handed-over"

// reasonDryRun is why every message a dry run is done with is deleted.
const reasonDryRun = "dry-run"

func (h *Processor) handle(ctx context.Context, d Delivery) Outcome {
	msg, err := messages.Parse(d.Body)
	if err != nil {
		h.metrics.received.WithLabelValues("unparsable").Inc()
		h.log.Warn("message cannot be parsed and will never be; deleting it", "message_id", d.MessageID,
			"parse_error", messages.ReasonOf(err), "err", err)
		return Done("unparsable")
	}
	h.metrics.received.WithLabelValues(msg.Kind).Inc()
	if !msg.Time.IsZero() && d.Copies == 0 && d.ReceiveCount <= 1 {
		// The first receive only: a message received again is late for
		// reasons that are not the queue's (its replica stopped, its work
		// failed), and would count each retry as lag.
		h.metrics.lag.Observe(max(0, h.clock.Since(msg.Time).Seconds()))
	}
	if msg.Time.IsZero() {
		// A message that does not say when its event happened began when
		// it (or, for a copy, its original) entered the queue: a copy's
		// bound does not move.
		msg.Time = d.SentAt
	}
	log := h.log.With("message_id", d.MessageID, "kind", msg.Kind, "event_id", msg.ID, "instances", msg.InstanceIDs)
	if d.Held == nil {
		d.Held = func() {}
	}
	if msg.Verdict != messages.Drain {
		d.Held() // holds nothing back: only drains wait for the burst
	}
	if msg.Verdict == messages.Ignore {
		log.Info("nothing to do for this message", "reason", msg.Reason)
		return Done(msg.Reason)
	}
	if len(msg.InstanceIDs) == 1 {
		return h.handleInstance(ctx, d, msg, msg.InstanceIDs[0], log)
	}
	// A Health event may name many instances: work on them together, and
	// keep the message until every one is done.
	outs := make([]Outcome, len(msg.InstanceIDs))
	if d.Requeue != nil {
		requeue := d.Requeue
		var once sync.Once
		var err error
		d.Requeue = func(ctx context.Context, reason string, after time.Duration) error {
			once.Do(func() { err = requeue(ctx, reason, after) })
			return err
		}
	}
	// The message is held once every instance's node is.
	var mu sync.Mutex
	held, allHeld := 0, d.Held
	var wg sync.WaitGroup
	for i, id := range msg.InstanceIDs {
		di := d
		var once sync.Once
		di.Held = func() {
			once.Do(func() {
				mu.Lock()
				defer mu.Unlock()
				if held++; held == len(msg.InstanceIDs) {
					allHeld()
				}
			})
		}
		wg.Go(func() { outs[i] = h.handleInstance(ctx, di, msg, id, log.With("instance", id)) })
	}
	wg.Wait()
	for _, o := range outs {
		if o.Reason == ReasonRequeued {
			return o // its copy does the rest
		}
	}
	for _, o := range outs {
		if !o.Delete {
			return o
		}
	}
	return Done("processed")
}

// waitsInFlight are the reasons to try a message's work again that are
// expected to clear while this replica waits: a node that has not joined
// or is not Ready yet, another replica's Lease of the node. The work waits
// for them with the message in flight, its visibility extended, rather
// than leave it to be received again: every receive counts toward the
// queue's redrive limit, and a live message must not be dead-lettered.
// Any other failure (lease-failed, lookup-failed: the API server or EC2
// cannot be reached; lease-lost) releases the message while the queue's
// redrive policy leaves it a receive to spare, since this replica may be
// the one cut off and another may do the work. On its last spare receive
// a fresh copy is sent instead (Delivery.Requeue), with receives of its
// own, for any replica to take up; so an API server outage dead-letters
// nothing that arrives during it, and a replica cut off alone holds
// nothing. Where no copy can be sent, the work waits in flight.
var waitsInFlight = map[string]bool{"node-not-joined": true, "node-not-ready": true, "node-busy": true}

// neverWaits are the retries that must not wait in flight: lastcall is
// stopping.
var neverWaits = map[string]bool{"interrupted": true, "stopping": true}

// handleInstance works on one instance of msg, trying again in flight on
// an expected wait until the message's bound: its deadline, or
// LifecycleDeadline from when it began. Past the bound the message is
// left to reappear, as any other failure.
func (h *Processor) handleInstance(ctx context.Context, d Delivery, msg messages.Message, instanceID string, log *slog.Logger) Outcome {
	bound := msg.Deadline
	if bound.IsZero() {
		bound = began(msg, h.clock).Add(h.opts.LifecycleDeadline)
	}
	for {
		out := h.tryInstance(ctx, d, msg, instanceID, log)
		// Held or not, this instance holds no drain back any longer.
		d.Held()
		if out.Delete {
			return out
		}
		inBound := h.clock.Now().Add(out.RetryAfter).Before(bound)
		lastSpare := d.ReceivesLeft <= 1 && !waitsInFlight[out.Reason]
		if lastSpare && inBound && d.Requeue != nil && !h.opts.DryRun {
			err := d.Requeue(ctx, out.Reason, out.RetryAfter)
			if err == nil {
				return Done(ReasonRequeued)
			}
			log.Warn("cannot send a fresh copy of the message on its last spare receive; keeping it in flight instead", "reason", out.Reason, "err", err)
		}
		waits := waitsInFlight[out.Reason] || (lastSpare && !neverWaits[out.Reason])
		if !waits || !inBound {
			return out
		}
		h.metrics.waits.WithLabelValues(out.Reason).Inc()
		log.Debug("waiting with the message in flight", "reason", out.Reason, "retry_in", out.RetryAfter, "until", bound)
		select {
		case <-ctx.Done():
			return Retry("interrupted", h.opts.RetryAfter)
		case <-d.HandOver:
			return out // nothing to hand over: the message reappears
		case <-h.clock.After(out.RetryAfter):
		}
	}
}

func (h *Processor) tryInstance(ctx context.Context, d Delivery, msg messages.Message, instanceID string, log *slog.Logger) Outcome {
	// A terminate lifecycle action's deadline beyond the shortest global
	// timeout any hook has needs its hook described: asked now, beside the
	// node's lookup and Lease, so the notice is not late to join a drain
	// another message of the instance started.
	var lifecycleDeadline func() time.Time
	if msg.Lifecycle != nil && msg.Verdict == messages.Drain && msg.Deadline.IsZero() && h.opts.LifecycleDeadline > lifecycle.ShortestGlobalTimeout {
		ch := make(chan time.Time, 1)
		hookLog := log
		go func() { ch <- h.lifecycleDeadline(ctx, msg, hookLog) }()
		lifecycleDeadline = sync.OnceValue(func() time.Time { return <-ch })
	}
	name, err := h.nodes.NodeFor(ctx, instanceID)
	switch {
	case errors.Is(err, instances.ErrNotOurs):
		// Its lifecycle action is its own cluster's to complete.
		log.Info("instance belongs to another cluster; deleting the message, leaving any lifecycle action alone", "err", err)
		return Done("not-our-cluster")
	case errors.Is(err, instances.ErrUnknownInstance), errors.Is(err, instances.ErrNoNode):
		if msg.Verdict == messages.CompleteLaunch {
			log.Info("launching instance has not joined yet", "err", err)
			return Retry("node-not-joined", h.opts.LaunchRetryAfter)
		}
		if errors.Is(err, instances.ErrUnknownInstance) {
			// Perhaps another cluster's: never complete its lifecycle
			// action here. It completes with its hook's default result at
			// the hook's timeout, unless its owner completes it first.
			if msg.Lifecycle != nil {
				log.Warn("no node runs this instance and nothing tells it is this cluster's; deleting the message, leaving its lifecycle action to time out",
					"hook", msg.Lifecycle.HookName, "group", msg.Lifecycle.GroupName, "err", err)
			} else {
				log.Info("no node runs this instance and nothing tells it is this cluster's; deleting the message", "err", err)
			}
			return Done("unknown-instance")
		}
		if msg.Lifecycle != nil {
			// Ours, but no node to drain: let the Auto Scaling group go on.
			h.complete(ctx, *msg.Lifecycle, lifecycle.Continue, drainNotApplicable, log)
		}
		log.Info("no node runs this cluster's instance (never joined, or gone); deleting the message", "err", err)
		return Done("no-node")
	case err != nil:
		log.Warn("finding the instance's node failed; will retry", "err", err)
		return Retry("lookup-failed", h.opts.RetryAfter)
	}
	log = log.With("node", name)
	if msg.Verdict == messages.CompleteLaunch {
		return h.completeLaunch(ctx, msg, name, log)
	}
	if msg.Gone && h.opts.OutOfService != nil {
		h.outOfService(ctx, name, log)
	}

	held, err := h.leases.Acquire(ctx, name)
	if errors.Is(err, lease.ErrHeld) {
		log.Info("another replica is working on this node; will retry", "err", err)
		return Retry("node-busy", h.opts.RetryAfter)
	}
	if err != nil {
		log.Warn("taking the node's lease failed; will retry", "err", err)
		return Retry("lease-failed", h.opts.RetryAfter)
	}
	carried := false
	defer func() {
		if !carried {
			held.Release(context.WithoutCancel(ctx))
		}
	}()
	if msg.Verdict == messages.Release {
		return h.withdraw(name, instanceID, msg, log)
	}

	n := h.notice(msg, instanceID)
	switch {
	case lifecycleDeadline != nil:
		n.Deadline = lifecycleDeadline()
	case n.Completer != nil && n.Deadline.IsZero():
		// Within the shortest global timeout any hook has: no need to
		// describe the hook.
		n.Deadline = began(msg, h.clock).Add(h.opts.LifecycleDeadline)
	}
	t, err := h.episodes.Add(name, n)
	if err != nil {
		return Retry("stopping", h.opts.RetryAfter)
	}
	go func() {
		select {
		case <-t.Held():
		case <-t.Done():
		case <-ctx.Done():
		}
		d.Held()
	}()
	handOver := d.HandOver
	for waiting := true; waiting; {
		select {
		case <-t.Done():
			waiting = false
		case <-held.Lost():
			// Another replica may take the node now: stop working on it, and
			// leave the hold for whoever does.
			_ = h.episodes.Drop(name, n.ID)
			return Retry("lease-lost", h.opts.RetryAfter)
		case <-ctx.Done():
			return Retry("interrupted", h.opts.RetryAfter)
		case <-handOver:
			handOver = nil
			if h.handOver(ctx, name, n, msg, log) {
				carried = true
				h.carry(name, n.ID, t, held, log)
				return Done(reasonHandedOver)
			}
		}
	}
	if t.Ending().Interrupted {
		return Retry("interrupted", h.opts.RetryAfter)
	}
	return Done("processed")
}

// outOfService marks the node of a terminated instance out of service.
// A failure is logged and counted: the drain goes on, and the volumes
// detach on Kubernetes' own timeout.
func (h *Processor) outOfService(ctx context.Context, name string, log *slog.Logger) {
	added, err := h.opts.OutOfService(ctx, name)
	switch {
	case err != nil:
		h.metrics.outOfService.WithLabelValues("error").Inc()
		log.Warn("marking the terminated instance's node out of service failed", "err", err)
	case added:
		h.metrics.outOfService.WithLabelValues("added").Inc()
		log.Info("instance terminated: node marked out of service, so Kubernetes deletes its pods and detaches its volumes now",
			"taint", "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
	default:
		h.metrics.outOfService.WithLabelValues("present").Inc()
	}
}

// notice is what a message tells of one instance.
func (h *Processor) notice(msg messages.Message, instanceID string) episode.Notice {
	action := interruption.ActionDrain
	if msg.Verdict == messages.Cordon {
		action = interruption.ActionCordon
	}
	n := episode.Notice{
		Event: interruption.Event{
			ID: noticeID(msg, msg.Key, instanceID), Source: SourceName, Kind: msg.Interruption,
			Action: action, Deadline: msg.Deadline, Observed: h.clock.Now(), Detail: msg.Detail,
		},
		Instance: instanceID,
	}
	if msg.Lifecycle != nil && action == interruption.ActionDrain {
		n.Completer = &lifecycleStep{h: h, action: *msg.Lifecycle}
	}
	return n
}

// lifecycleDeadline is the deadline of a drain for a terminate lifecycle
// action: Auto Scaling sets none, and heartbeats keep the action alive up
// to its hook's global timeout. It counts from when the action began (the
// message's time), bounded by LifecycleDeadline and the global timeout
// (asked of Auto Scaling).
// When the hook cannot be described, the shortest global timeout any hook
// can have bounds it.
func (h *Processor) lifecycleDeadline(ctx context.Context, msg messages.Message, log *slog.Logger) time.Time {
	a := msg.Lifecycle
	global, err := h.hooks.GlobalTimeout(ctx, a.GroupName, a.HookName)
	if err != nil {
		global = lifecycle.ShortestGlobalTimeout
		log.Warn("cannot tell how long the lifecycle action can be kept alive; bounding its drain by the shortest any hook allows",
			"hook", a.HookName, "group", a.GroupName, "bound", min(h.opts.LifecycleDeadline, global), "err", err)
	}
	return began(msg, h.clock).Add(min(h.opts.LifecycleDeadline, global))
}

// began is when the message's lifecycle action began: the message's time,
// or now when it has none.
func began(msg messages.Message, clk clock.PassiveClock) time.Time {
	if msg.Time.IsZero() {
		return clk.Now()
	}
	return msg.Time
}

func (h *Processor) completeLaunch(ctx context.Context, msg messages.Message, name string, log *slog.Logger) Outcome {
	n, ok := h.nodes.Node(name)
	if !ok || !ready(n) {
		log.Info("launched node not Ready yet; will retry")
		return Retry("node-not-ready", h.opts.LaunchRetryAfter)
	}
	h.complete(ctx, *msg.Lifecycle, lifecycle.Continue, drainNotApplicable, log)
	return Done("processed")
}

// What a lifecycle action's node had been through when it was completed: a
// bounded label of lastcall_lifecycle_completions_total.
const (
	drainFinished      = "finished"
	drainUnfinished    = "unfinished"
	drainNotApplicable = "not_applicable"
)

// complete completes a lifecycle action outside a drain (a launch, or an
// instance no node runs): the explicit last step. It must outlive a
// shutdown, but not hang it: a failure that never clears (a missing
// permission) is given up after completeTimeout, and the action then
// times out in AWS with its default result.
func (h *Processor) complete(ctx context.Context, a messages.LifecycleAction, result lifecycle.Result, drained string, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	_ = h.completed(cctx, a, result, drained, log)
}

// completed completes a, counts and logs it. An action already gone is
// done, not an error.
func (h *Processor) completed(ctx context.Context, a messages.LifecycleAction, result lifecycle.Result, drained string, log *slog.Logger) error {
	if h.opts.DryRun {
		log.Info("dry run: would complete the lifecycle action", "result", result, "drain", drained, "hook", a.HookName, "group", a.GroupName)
		return nil
	}
	err := h.lifecycle.Complete(ctx, a, result)
	switch {
	case errors.Is(err, lifecycle.ErrNoActiveAction):
		log.Warn("lifecycle action was already gone (completed elsewhere or timed out)", "result", result, "err", err)
		return nil
	case err != nil:
		log.Error("completing lifecycle action failed", "result", result, "err", err)
		return err
	}
	h.metrics.completions.WithLabelValues(string(result), drained).Inc()
	if drained == drainUnfinished {
		log.Warn("lifecycle action completed before the drain finished", "result", result, "hook", a.HookName, "group", a.GroupName)
		return nil
	}
	log.Info("lifecycle action completed", "result", result, "drain", drained, "hook", a.HookName, "group", a.GroupName)
	return nil
}

// lifecycleStep is a lifecycle action as the completer of its notice:
// heartbeats while the drain runs, then CONTINUE, or the failure result
// when the drain did not finish.
type lifecycleStep struct {
	h      *Processor
	action messages.LifecycleAction
}

func (s *lifecycleStep) Name() string { return "asg-lifecycle" }

func (s *lifecycleStep) KeepAlive(ctx context.Context) {
	if s.h.opts.DryRun {
		return
	}
	if err := s.h.lifecycle.KeepAlive(ctx, s.action); errors.Is(err, lifecycle.ErrNoActiveAction) {
		s.h.log.Warn("lifecycle action gone while draining; heartbeats stopped", "instance", s.action.InstanceID, "err", err)
	}
}

func (s *lifecycleStep) Complete(ctx context.Context, o drain.Outcome) error {
	result, drained := lifecycle.Continue, drainFinished
	switch {
	case o == drain.CordonOnly:
		// No drain was asked for: the node is held, and the instance may go.
		drained = drainNotApplicable
	case !o.Finished() && o != drain.DryRun:
		result, drained = s.h.opts.FailureResult, drainUnfinished
	}
	return s.h.completed(ctx, s.action, result, drained, s.h.log.With("instance", s.action.InstanceID, "outcome", o.Label()))
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
