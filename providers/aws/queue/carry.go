package queue

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/providers/aws/messages"
)

// A drain may last longer than SQS lets a message stay in flight (12
// hours): an AWS Health event's drain runs until the event's start, often
// days away. Its message is then handed over to the node: the notice's
// hold, already on the node with its deadline, gets a carry (the instance,
// and the lifecycle action to complete at the end), and the message is
// deleted as "handed-over". The replica goes on with the drain under the
// node's Lease. Any replica that finds a carried hold no one works on (the
// Lease is free: the replica that carried it stopped) takes it up, with
// its heartbeats and its completion. The carry is cleared once the notice
// has ended.

// Carrier records on a node's hold that the hold alone carries its notice
// (a *node.Client).
type Carrier interface {
	Carry(ctx context.Context, name, id string, c *node.Carry) error
}

// stepLifecycle names the lifecycle action as the step of a carried notice.
const stepLifecycle = "asg-lifecycle"

// handOver records n's hold as carried by the node alone. It reports
// whether it did; a failure leaves the message with the work, to be tried
// again.
func (h *Processor) handOver(ctx context.Context, name string, n episode.Notice, msg messages.Message, log *slog.Logger) bool {
	c := &node.Carry{Instance: n.Instance, Detail: n.Detail}
	if s, ok := n.Completer.(*lifecycleStep); ok {
		data, err := json.Marshal(s.action)
		if err != nil {
			log.Error("cannot record the lifecycle action on the node", "err", err)
			return false
		}
		c.Step, c.Data = stepLifecycle, data
	}
	cctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	if err := h.carrier.Carry(cctx, name, n.ID, c); err != nil {
		log.Warn("handing the drain over to the node failed; the message keeps it for now", "err", err)
		return false
	}
	h.metrics.handedOver.WithLabelValues(msg.Kind).Inc()
	log.Info("drain outlives the message's time in flight: its node carries it on, and the message is deleted", "id", n.ID)
	return true
}

// carry follows a carried notice to its end under held, in the background,
// then clears the carry (unless lastcall stopped first, or the Lease was
// lost: whoever carries it on then will) and releases the Lease.
func (h *Processor) carry(name, id string, t *episode.Ticket, held *lease.Held, log *slog.Logger) {
	key := name + "/" + id
	h.mu.Lock()
	h.carrying[key] = true
	h.mu.Unlock()
	h.carriers.Go(func() {
		defer func() {
			h.mu.Lock()
			delete(h.carrying, key)
			h.mu.Unlock()
		}()
		defer held.Release(context.Background())
		select {
		case <-t.Done():
		case <-h.stopping.Done():
			return // lastcall stops: whoever takes the Lease carries it on
		case <-held.Lost():
			_ = h.episodes.Drop(name, id)
			log.Warn("lost the node's Lease while carrying a notice; whoever takes the Lease carries it on", "id", id)
			return
		}
		if t.Ending().Interrupted {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
		defer cancel()
		switch err := h.carrier.Carry(ctx, name, id, nil); {
		case err == nil, errors.Is(err, node.ErrNoHold):
			log.Info("carried notice ended", "id", id)
		default:
			log.Warn("clearing the carry of an ended notice failed; it will be taken up again", "id", id, "err", err)
		}
	})
}

// isCarrying says whether this replica carries the notice id on node name.
func (h *Processor) isCarrying(name, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.carrying[name+"/"+id]
}

// CarryOn takes up, every interval until ctx ends, the carried holds of
// the queue processor that no replica works on: their node's Lease is
// free. It returns once the notices it carries have stopped (lastcall
// stops them on its way out).
func (h *Processor) CarryOn(ctx context.Context, interval time.Duration, nodes func() []*corev1.Node) error {
	defer h.carriers.Wait()
	defer h.stop()
	h.sweep(ctx, interval, nodes, func(n *corev1.Node, hold node.Hold) {
		if hold.Carry == nil || h.isCarrying(n.Name, hold.ID) {
			return
		}
		h.takeUp(ctx, n.Name, hold)
	})
	return nil
}

// sweep calls f with every hold of the queue processor on every node,
// every interval until ctx ends.
func (h *Processor) sweep(ctx context.Context, interval time.Duration, nodes func() []*corev1.Node, f func(*corev1.Node, node.Hold)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.clock.After(interval):
		}
		for _, n := range nodes() {
			st, err := node.StateOf(n)
			if err != nil {
				continue // the episode reports an unreadable state when it holds the node
			}
			for _, hold := range st.Owned(node.OwnerQueue) {
				f(n, hold)
			}
		}
	}
}

// takeUp carries a carried hold on, under its node's Lease.
func (h *Processor) takeUp(ctx context.Context, name string, hold node.Hold) {
	log := h.log.With("node", name, "id", hold.ID, "kind", hold.Kind, "instance", hold.Carry.Instance)
	held, err := h.leases.Acquire(ctx, name)
	switch {
	case errors.Is(err, lease.ErrHeld):
		return // another replica carries it
	case err != nil:
		log.Warn("taking the node's Lease to carry a notice on failed; will retry", "err", err)
		return
	}
	n := episode.Notice{Event: interruption.Event{ID: hold.ID, Source: SourceName, Kind: hold.Kind, Action: hold.Action,
		Observed: h.clock.Now(), Detail: hold.Carry.Detail}, Instance: hold.Carry.Instance}
	if hold.Deadline != nil {
		n.Deadline = *hold.Deadline
	}
	switch hold.Carry.Step {
	case "":
	case stepLifecycle:
		var a messages.LifecycleAction
		if err := json.Unmarshal(hold.Carry.Data, &a); err != nil || a.InstanceID == "" {
			log.Error("the carried lifecycle action cannot be read; carrying the drain on without it (the action ends at its hook's timeout)",
				"data", string(hold.Carry.Data), "err", err)
			break
		}
		n.Completer = &lifecycleStep{h: h, action: a}
	default:
		log.Error("carried notice names a step this lastcall does not know; carrying the drain on without it", "step", hold.Carry.Step)
	}
	t, err := h.episodes.Add(name, n)
	if err != nil {
		held.Release(context.WithoutCancel(ctx))
		return
	}
	h.metrics.takenUp.Inc()
	log.Info("carrying on a notice its node carries, which no replica worked on", "deadline", n.Deadline)
	h.carry(name, hold.ID, t, held, log)
}
