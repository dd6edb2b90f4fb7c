package episode

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
)

// add puts n in force, or follows it with t if it already is.
func (e *episode) add(n Notice, t *Ticket) {
	if cur, ok := e.notices[n.ID]; ok {
		if cur.ending != nil {
			t.end(*cur.ending)
		} else {
			if cur.held {
				t.markHeld()
			}
			cur.tickets = append(cur.tickets, t)
		}
		return
	}
	if e.gone {
		t.end(Ending{Outcome: drain.NodeGone})
		return
	}
	now := e.m.deps.Clock.Now()
	if n.Observed.IsZero() {
		n.Observed = now
	}
	nt := &notice{Notice: n, tickets: []*Ticket{t}}
	if n.Action == interruption.ActionDrain {
		nt.deadline = drain.Deadline(n.Deadline, now, e.m.opts.FallbackDeadline)
		if !n.Deadline.IsZero() && !nt.deadline.Equal(n.Deadline) {
			e.log.Warn("notice deadline already passed, draining with the fallback deadline",
				"id", n.ID, "deadline", n.Deadline, "fallback", e.m.opts.FallbackDeadline)
		}
	}
	if n.Instance != "" && e.instance == "" {
		e.instance = n.Instance
	}
	e.notices[n.ID] = nt
	e.hold(nt)
}

// hold holds the node for nt, trying again later if that fails.
func (e *episode) hold(nt *notice) {
	if e.notices[nt.ID] != nt {
		return // withdrawn meanwhile
	}
	m := e.m
	ch, err := m.deps.Nodes.Hold(e.ctx, e.node, nt.Event)
	if err != nil {
		m.metrics.actions.WithLabelValues("cordon", "failure").Inc()
		if nt.hold == nil {
			nt.hold = &retry{backoff: m.opts.Retry}
		}
		wait := nt.hold.backoff.Step()
		e.log.Error("holding the node failed; will retry", "id", nt.ID, "err", err, "retry_in", wait)
		e.later(wait, func() { e.hold(nt) })
		return
	}
	nt.hold, nt.held = nil, true
	for _, t := range nt.tickets {
		t.markHeld()
	}
	e.unreadable(ch)
	switch {
	case ch.DryRun:
		m.metrics.actions.WithLabelValues("cordon", "dry_run").Inc()
		e.log.Info("dry run: would hold node", "id", nt.ID, "kind", nt.Kind, "changes", changes(ch))
	case !ch.Unchanged:
		m.metrics.noticeToCordon.Observe(m.deps.Clock.Since(nt.Observed).Seconds())
		m.metrics.actions.WithLabelValues("cordon", "success").Inc()
		e.event(corev1.EventTypeWarning, "InterruptionNotice", "%s from %s: %s", nt.Kind, nt.Source, describe(nt.Event))
		e.event(corev1.EventTypeNormal, "Cordoned", "lastcall holds the node for %s (taint %s): %s",
			nt.Kind, node.TaintKey(nt.Kind), changes(ch))
		e.log.Info("node held", "id", nt.ID, "kind", nt.Kind, "source", nt.Source, "changes", changes(ch),
			"since_notice", m.deps.Clock.Since(nt.Observed))
	}
	if !ch.Unchanged {
		m.deps.Notifier.Notify(e.notification(notify.PhaseReceived, nt))
	}
	if nt.Action != interruption.ActionDrain {
		nt.finish(Ending{})
		return
	}
	if m.opts.CordonOnly {
		e.cordonOnly(nt)
		return
	}
	e.plan()
}

// cordonOnly ends a held drain notice without a drain (--cordon-only): its
// completer runs at once.
func (e *episode) cordonOnly(nt *notice) {
	if nt.ending != nil || nt.completing {
		return
	}
	e.m.metrics.actions.WithLabelValues("drain", drain.CordonOnly.Label()).Inc()
	e.log.Info("cordon only: the node is held and not drained", "id", nt.ID, "kind", nt.Kind)
	e.event(corev1.EventTypeNormal, "DrainSkipped", "%s: --cordon-only: lastcall holds the node and evicts nothing; its pods go with the node", nt.Kind)
	e.complete(nt, drain.CordonOnly)
}

// withdraw ends the notice ev.ID; release says whether to release its hold.
func (e *episode) withdraw(ev interruption.Event, release bool) {
	nt, ok := e.notices[ev.ID]
	if ok {
		delete(e.notices, ev.ID)
		nt.endTickets(Ending{Interrupted: true})
		if e.run != nil && e.run.covers[ev.ID] {
			delete(e.run.covers, ev.ID)
			e.replan("notice " + ev.ID + " withdrawn")
		}
	}
	if !release {
		e.log.Info("no longer working on the notice; its hold stays", "id", ev.ID)
		return
	}
	// Released even when not in force here: a hold left by an earlier run
	// of lastcall goes as soon as its notice is seen withdrawn.
	if _, pending := e.releasing[ev.ID]; !pending {
		r := &retry{backoff: e.m.opts.Retry}
		e.releasing[ev.ID] = r
		e.release(ev, r)
	}
}

// release releases the hold of ev.ID, trying again later if that fails.
func (e *episode) release(ev interruption.Event, r *retry) {
	if e.releasing[ev.ID] != r {
		return
	}
	if _, again := e.notices[ev.ID]; again || e.gone {
		delete(e.releasing, ev.ID) // in force again, or nothing to release
		return
	}
	m := e.m
	ch, err := m.deps.Nodes.Release(e.ctx, e.node, ev.ID)
	if err != nil {
		m.metrics.actions.WithLabelValues("uncordon", "failure").Inc()
		wait := r.backoff.Step()
		e.log.Error("releasing the node failed; will retry", "id", ev.ID, "err", err, "retry_in", wait)
		e.later(wait, func() { e.release(ev, r) })
		return
	}
	delete(e.releasing, ev.ID)
	e.unreadable(ch)
	switch {
	case ch.Unchanged:
	case ch.DryRun:
		m.metrics.actions.WithLabelValues("uncordon", "dry_run").Inc()
		e.log.Info("dry run: would release node", "id", ev.ID, "changes", changes(ch))
	default:
		m.metrics.actions.WithLabelValues("uncordon", "success").Inc()
		e.event(corev1.EventTypeNormal, "InterruptionCancelled", "%s %s withdrawn; lastcall undid its own changes (%s)", ev.Kind, ev.ID, changes(ch))
		e.log.Info("node released", "id", ev.ID, "changes", changes(ch))
	}
}

// releaseStale releases the owner's holds on the node whose notice is not
// in force.
func (e *episode) releaseStale() error {
	st, _, err := e.m.deps.Nodes.State(e.ctx, e.node)
	if err != nil {
		return err
	}
	owner := e.m.deps.Nodes.Owner()
	for _, h := range st.Holds {
		switch _, inForce := e.notices[h.ID]; {
		case inForce:
		case h.Owner != owner:
			e.log.Debug("hold of another owner left as it is", "id", h.ID, "owner", h.Owner)
		default:
			e.log.Info("notice no longer in force, releasing its hold", "id", h.ID, "kind", h.Kind, "since", h.Since)
			e.withdraw(interruption.Event{ID: h.ID, Kind: h.Kind, Action: interruption.ActionCancel, Source: "reconcile"}, true)
		}
	}
	return nil
}

// nodeGone ends everything: the node was deleted.
func (e *episode) nodeGone() {
	e.gone = true
	e.log.Info("node gone: the interruption episode ends")
	clear(e.releasing)
	if e.run != nil {
		e.run.cancel() // finish ends the notices
		return
	}
	e.endAll()
}

// endAll ends every notice as the node is gone: a drain notice held and
// not drained for yet has its completer run.
func (e *episode) endAll() {
	for id, nt := range e.notices {
		delete(e.notices, id)
		switch {
		case nt.ending != nil || nt.completing:
		case nt.Action == interruption.ActionDrain && nt.held:
			e.complete(nt, drain.NodeGone)
		default:
			nt.finish(Ending{Outcome: drain.NodeGone})
		}
	}
}

// unreadable tells that the node's state annotation could not be read, so
// that lastcall took the node anew.
func (e *episode) unreadable(ch node.Change) {
	if ch.Unreadable == nil {
		return
	}
	e.m.metrics.unreadable.Inc()
	e.event(corev1.EventTypeWarning, "StateUnreadable", "%v; lastcall holds the node anew, and will not undo a taint, label or cordon it cannot prove it added",
		ch.Unreadable)
	e.log.Warn("node state unreadable: holding the node anew", "err", ch.Unreadable)
}
