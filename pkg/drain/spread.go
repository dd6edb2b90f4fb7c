package drain

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// maxSpreadWait bounds how long a pod of a drain without a deadline waits
// for its Service to have ready endpoints elsewhere.
const maxSpreadWait = 2 * time.Minute

// spread keeps a drain from taking a Service to zero ready endpoints.
// Before a pod that is a ready endpoint of a Service goes, the Service must
// have as many ready endpoints on other nodes as pods of it this drain has
// already let go: when every ready endpoint of the Service is on the node,
// the first pod goes at once (the others still serve), and each next one
// only once a replacement is ready elsewhere. The wait ends at the last
// moment the pod can still shut down gracefully; the deadline's policy
// then applies as to any pod.
type spread struct {
	d         *Drainer
	node      string
	endpoints *endpointWatch

	mu       sync.Mutex
	released map[string]int // "namespace/service": pods let go
}

func newSpread(d *Drainer, node string, endpoints *endpointWatch) *spread {
	return &spread{d: d, node: node, endpoints: endpoints, released: map[string]int{}}
}

// wait returns once p may go (see spread), or its bound has passed; false
// if ctx ended or stop closed first.
func (s *spread) wait(ctx context.Context, p *corev1.Pod, bound time.Time, stop <-chan struct{}) bool {
	d, name := s.d, p.Namespace+"/"+p.Name
	start := d.clock.Now()
	waiting := ""
	for {
		changed := s.endpoints.notify.wait()
		if svc, ok := s.release(p); ok {
			if waiting != "" {
				d.metrics.spread.WithLabelValues("ready-elsewhere").Inc()
				d.log.Info("a replacement endpoint is ready elsewhere; the pod may go", "pod", name, "service", waiting, "waited", d.clock.Since(start))
			}
			return true
		} else if svc != "" && waiting == "" {
			waiting = svc
			d.log.Info("every ready endpoint of the pod's Service is on the node: waiting for a replacement to be ready elsewhere before the pod goes",
				"pod", name, "service", svc, "until", bound)
		}
		select {
		case <-ctx.Done():
			return false
		case <-stop:
			return false
		case <-changed:
		case <-d.clock.After(min(bound.Sub(d.clock.Now()), time.Second)):
			if d.clock.Now().Before(bound) {
				continue // look again: the slices may not be listed in time
			}
			s.mu.Lock()
			svcs, _ := s.endpoints.services(p.Namespace, p.UID)
			s.letGo(p.Namespace, svcs)
			s.mu.Unlock()
			d.metrics.spread.WithLabelValues("timeout").Inc()
			d.log.Warn("no replacement endpoint ready elsewhere by the last moment the pod can shut down gracefully; it goes anyway",
				"pod", name, "service", waiting, "waited", d.clock.Since(start))
			return true
		}
	}
}

// release lets p go if each Service it is a ready endpoint of has enough
// ready endpoints elsewhere, counting it as let go; otherwise it names a
// Service that has not. Pods the namespace's slices are not known for yet
// wait (svc "").
func (s *spread) release(p *corev1.Pod) (svc string, ok bool) {
	svcs, synced := s.endpoints.services(p.Namespace, p.UID)
	if !synced {
		return "", s.endpoints.unknown(p.Namespace) // not listed in time: go on without
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range svcs {
		if s.endpoints.readyElsewhere(p.Namespace, svc, s.node) < s.released[p.Namespace+"/"+svc] {
			return svc, false
		}
	}
	s.letGo(p.Namespace, svcs)
	return "", true
}

// letGo counts a pod of each of the Services as let go; s.mu is held.
func (s *spread) letGo(ns string, svcs []string) {
	for _, svc := range svcs {
		s.released[ns+"/"+svc]++
	}
}

// spreadBound is until when a pod may wait for its Service: the last
// moment it can still shut down gracefully when the drain has a deadline,
// else maxSpreadWait from now.
func spreadBound(end, overrideAt, now time.Time) time.Time {
	if end.IsZero() {
		return now.Add(maxSpreadWait)
	}
	return overrideAt
}
