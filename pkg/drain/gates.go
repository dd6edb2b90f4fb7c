package drain

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/serving"
)

// maxGateWait bounds how long a drain waits for a gated pod's endpoint to
// leave its EndpointSlices: past it (an endpointslice controller that does
// not answer) the pod is evicted anyway.
const maxGateWait = time.Minute

// gates is a drain's use of the serving gate (package serving): before a
// gated pod is evicted, it stops serving, its endpoint leaves the
// Service's EndpointSlices, and the balancers get --serving-gate-delay to
// follow; only then does its server get SIGTERM.
type gates struct {
	d         *Drainer
	endpoints *endpointWatch

	mu     sync.Mutex
	owners map[types.UID]chan struct{}
}

func newGates(d *Drainer, endpoints *endpointWatch) *gates {
	return &gates{d: d, endpoints: endpoints, owners: map[types.UID]chan struct{}{}}
}

// wanted says whether p stops serving before its eviction.
func (g *gates) wanted(p *corev1.Pod) bool { return !g.d.opts.DryRun && serving.Gated(p) }

// lock serialises the gated pods of one owner (a ReplicaSet, a
// StatefulSet): each stops serving and is evicted before the next stops
// serving, so that the pods a drain withdraws at once never make a budget
// refuse them all. ok is false if ctx ended or stop closed first.
func (g *gates) lock(ctx context.Context, p *corev1.Pod, stop <-chan struct{}) (release func(), ok bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return func() {}, true
	}
	g.mu.Lock()
	ch, found := g.owners[ref.UID]
	if !found {
		ch = make(chan struct{}, 1)
		g.owners[ref.UID] = ch
	}
	g.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	case <-ctx.Done():
	case <-stop:
	}
	return nil, false
}

// gateBound is until when a gated pod may wait to stop serving: the last
// moment it can still shut down gracefully (overrideAt, when the drain has
// a deadline), and never more than maxGateWait from now.
func gateBound(end, overrideAt, now time.Time) time.Time {
	bound := now.Add(maxGateWait)
	if !end.IsZero() && overrideAt.Before(bound) {
		return overrideAt
	}
	return bound
}

// unserve sets the pod's gate False, waits until no EndpointSlice lists
// it as a ready endpoint, then waits GateDelay for kube-proxy and load
// balancers to follow; all by bound. A failure is logged and counted, and
// the pod is evicted anyway: it would be killed with its node.
func (g *gates) unserve(ctx context.Context, req Request, p *corev1.Pod, bound time.Time) {
	d, name := g.d, p.Namespace+"/"+p.Name
	start := d.clock.Now()
	if err := serving.Withdraw(ctx, d.client, p, fmt.Sprintf("lastcall: evicting the pod next (%s)", req.Why)); err != nil {
		d.metrics.gates.WithLabelValues("error").Inc()
		d.log.Warn("cannot stop the pod serving before its eviction; evicting it anyway", "pod", name, "err", err)
		return
	}
	outcome := "left"
	for left := false; !left; {
		ready, synced, changed := g.endpoints.serves(p.Namespace, p.UID)
		if synced && !ready {
			break
		}
		if !synced && g.endpoints.unknown(p.Namespace) {
			outcome, left = "timeout", true
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-d.clock.After(min(bound.Sub(d.clock.Now()), time.Second)):
			if !d.clock.Now().Before(bound) {
				outcome, left = "timeout", true
			}
		}
	}
	d.metrics.gateWait.Observe(d.clock.Since(start).Seconds())
	d.metrics.gates.WithLabelValues(outcome).Inc()
	if outcome == "timeout" {
		d.log.Warn("the pod's endpoint was still ready when it had to go; evicting it", "pod", name, "waited", d.clock.Since(start))
		return
	}
	delay := max(0, min(d.opts.GateDelay, bound.Sub(d.clock.Now())))
	d.log.Info("pod stopped serving; evicting it once balancers follow", "pod", name, "endpoint_left_after", d.clock.Since(start), "delay", delay)
	select {
	case <-ctx.Done():
	case <-d.clock.After(delay):
	}
}
