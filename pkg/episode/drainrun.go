package episode

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
)

// earliest is the earliest deadline of the held drain notices in force
// (zero when there is none): when the node goes.
func (e *episode) earliest() time.Time {
	var t time.Time
	for _, nt := range e.notices {
		if nt.Action == interruption.ActionDrain && nt.held && (t.IsZero() || nt.deadline.Before(t)) {
			t = nt.deadline
		}
	}
	return t
}

// plan makes the drain cover every held drain notice not drained for yet:
// they join the running pass, which is re-planned to the earliest
// deadline, or start a new one.
func (e *episode) plan() {
	var joining []*notice
	for _, id := range slices.Sorted(maps.Keys(e.notices)) {
		nt := e.notices[id]
		if nt.Action != interruption.ActionDrain || !nt.held || nt.ending != nil || nt.completing {
			continue
		}
		if e.run == nil || !e.run.covers[id] {
			joining = append(joining, nt)
		}
	}
	if len(joining) == 0 {
		return
	}
	if e.run == nil && !e.gated && e.m.deps.DrainGate != nil {
		// The first pass waits for the gate; the notices wait with it,
		// held, and start it together once it opens.
		if !e.gating {
			e.gating = true
			e.log.Debug("drain waits for the gate: other nodes are being held")
			go func() {
				e.m.deps.DrainGate(e.ctx)
				e.enqueue(func() {
					e.gating, e.gated = false, true
					e.plan()
				})
			}()
		}
		return
	}
	if e.run != nil {
		if e.run.stopped || isDone(e.run.drain.Done()) {
			return // too late to join: finish plans the next pass
		}
		var kinds []string
		for _, nt := range joining {
			e.run.covers[nt.ID] = true
			e.keepAlive(nt)
			kinds = append(kinds, string(nt.Kind))
			e.log.Info("notice joins the running drain", "id", nt.ID, "kind", nt.Kind, "deadline", nt.deadline)
		}
		e.replan(strings.Join(kinds, ", "))
		return
	}
	e.startDrain(joining)
}

// startDrain starts a pass covering joining, to the earliest deadline.
func (e *episode) startDrain(joining []*notice) {
	m := e.m
	now := m.deps.Clock.Now()
	deadline := drain.Deadline(e.earliest(), now, m.opts.FallbackDeadline)
	why := joining[0]
	for _, nt := range joining {
		if nt.deadline.Before(why.deadline) {
			why = nt
		}
	}
	ctx, cancel := context.WithCancel(e.ctx)
	kctx, stopKeepAlive := context.WithCancel(e.ctx)
	req := drain.Request{Node: e.node, Kind: string(why.Kind), Deadline: deadline, Why: fmt.Sprintf("%s of node %s", why.Kind, e.node)}
	e.run = &drainRun{drain: m.deps.Drainer.Start(ctx, req), cancel: cancel, start: now, deadline: deadline,
		covers: map[string]bool{}, keepAlive: stopKeepAlive, keepAliveCtx: kctx}
	for _, nt := range joining {
		e.run.covers[nt.ID] = true
		e.keepAlive(nt)
	}
	e.event(corev1.EventTypeNormal, "DrainStarted", "draining for %s; deadline %s (in %s)",
		why.Kind, deadline.UTC().Format(time.RFC3339), deadline.Sub(now).Round(time.Second))
	e.log.Info("drain started", "ids", slices.Sorted(maps.Keys(e.run.covers)), "deadline", deadline)
}

// replan retargets the running pass to the earliest deadline of the
// notices in force, or stops it when it covers none any more.
func (e *episode) replan(why string) {
	run := e.run
	if len(run.covers) == 0 {
		run.stopped = true
		run.cancel()
		return
	}
	now := e.m.deps.Clock.Now()
	deadline := drain.Deadline(e.earliest(), now, e.m.opts.FallbackDeadline)
	if deadline.Equal(run.deadline) {
		return
	}
	was := run.deadline
	run.deadline = deadline
	run.drain.Retarget(deadline)
	e.m.metrics.retargets.Inc()
	e.event(corev1.EventTypeWarning, "DrainReplanned", "%s: the drain now works to %s (in %s), not %s",
		why, deadline.UTC().Format(time.RFC3339), deadline.Sub(now).Round(time.Second), was.UTC().Format(time.RFC3339))
	e.log.Info("drain re-planned", "why", why, "deadline", deadline, "was", was)
}

// keepAlive runs nt's completer's KeepAlive while the pass runs (not in a
// dry run).
func (e *episode) keepAlive(nt *notice) {
	if nt.Completer == nil || e.m.opts.DryRun {
		return
	}
	go nt.Completer.KeepAlive(e.run.keepAliveCtx)
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
