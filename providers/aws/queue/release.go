package queue

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/providers/aws/messages"
)

// When the queue processor's holds end, besides a drain that ends with the
// node gone:
//   - a scheduled change's, when Health closes or cancels the event (the
//     notices are keyed by its eventArn);
//   - an instance state change's stopping and stopped, when the instance is
//     running again;
//   - a rebalance recommendation's, once it has lasted the rebalance bound
//     (--rebalance-hold), unless an interruption came meanwhile, whose own
//     hold stays.
// Each is withdrawn from the node's episode, which releases only the
// queue's hold (node.Client.Release by owner): the agent's holds stay.

// noticeID is the ID of the notice a message gives an instance: key (the
// message's Key) stands for the message's ID when set.
func noticeID(msg messages.Message, key, instanceID string) string {
	if key == "" {
		key = msg.ID
	}
	return interruption.NewID(msg.Interruption, key, instanceID)
}

// withdraw withdraws the notices a Release message ends on the instance's
// node, whose Lease is held: their holds are released.
func (h *Processor) withdraw(name, instanceID string, msg messages.Message, log *slog.Logger) Outcome {
	for _, key := range msg.Withdraws {
		ev := interruption.Event{ID: noticeID(msg, key, instanceID), Source: SourceName, Kind: msg.Interruption,
			Action: interruption.ActionCancel, Observed: h.clock.Now(), Detail: msg.Detail}
		if err := h.episodes.Withdraw(name, ev); err != nil {
			return Retry("stopping", h.opts.RetryAfter)
		}
		h.metrics.withdrawn.WithLabelValues(msg.Kind).Inc()
		log.Info("notice withdrawn; releasing the queue's hold", "id", ev.ID)
	}
	return Done("processed")
}

// ExpireRebalanceHolds releases the queue's rebalance-recommendation holds
// once they have lasted bound, until ctx ends. It looks at the nodes every
// quarter of bound (at least every second, at most every minute), so a
// hold ends between bound and bound plus that interval after it began, and
// works on a node under its Lease: one another replica holds is looked at
// again the next time.
func (h *Processor) ExpireRebalanceHolds(ctx context.Context, bound time.Duration, nodes func() []*corev1.Node) error {
	interval := min(max(bound/4, time.Second), time.Minute)
	// withdrawn are the holds already withdrawn, until the nodes no longer
	// show them, so that each is counted once.
	withdrawn := map[string]bool{}
	seen := map[string]bool{}
	list := func() []*corev1.Node {
		// A new sweep: forget what the nodes no longer show.
		maps.DeleteFunc(withdrawn, func(id string, _ bool) bool { return !seen[id] })
		clear(seen)
		return nodes()
	}
	h.sweep(ctx, interval, list, func(n *corev1.Node, hold node.Hold) {
		if hold.Kind != interruption.KindRebalance {
			return
		}
		seen[hold.ID] = true
		if withdrawn[hold.ID] || h.clock.Since(hold.Since) < bound {
			return
		}
		withdrawn[hold.ID] = h.expire(ctx, n.Name, hold, bound)
	})
	return nil
}

// expire withdraws a rebalance hold that has lasted bound, under the
// node's Lease; it reports whether it did.
func (h *Processor) expire(ctx context.Context, name string, hold node.Hold, bound time.Duration) bool {
	log := h.log.With("node", name, "id", hold.ID, "kind", hold.Kind)
	held, err := h.leases.Acquire(ctx, name)
	switch {
	case errors.Is(err, lease.ErrHeld):
		log.Debug("another replica is working on this node; its expired rebalance hold waits", "err", err)
		return false
	case err != nil:
		log.Warn("taking the node's lease to release an expired rebalance hold failed; will retry", "err", err)
		return false
	}
	defer held.Release(context.WithoutCancel(ctx))
	ev := interruption.Event{ID: hold.ID, Source: SourceName, Kind: hold.Kind, Action: interruption.ActionCancel,
		Observed: h.clock.Now(), Detail: "rebalance recommendation held for " + bound.String() + " with no interruption since"}
	if err := h.episodes.Withdraw(name, ev); err != nil {
		return false
	}
	h.metrics.withdrawn.WithLabelValues(messages.KindRebalance).Inc()
	log.Info("rebalance hold lasted its bound; releasing it", "since", hold.Since, "bound", bound)
	return true
}
