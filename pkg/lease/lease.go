// Package lease gives a replica of the queue processor the exclusive right
// to work on one node, through a coordination.k8s.io Lease per node. A
// replica that dies stops renewing; once the lease expires another replica
// can take it and finish the work.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// ErrHeld is returned by Acquire when another live holder has the lease.
var ErrHeld = errors.New("lease held by another replica")

// Locker takes per-node leases for one holder.
type Locker struct {
	client    kubernetes.Interface
	namespace string
	holder    string
	duration  time.Duration
	clock     clock.Clock
	log       *slog.Logger

	// mu guards local: the nodes this process holds. Workers of one
	// replica share its holder identity, so the Lease alone would let two
	// of them in at once.
	mu    sync.Mutex
	local map[string]bool
}

// NewLocker returns a Locker whose leases, named "lastcall-<node>" in
// namespace, last duration unless renewed (every third of it).
func NewLocker(client kubernetes.Interface, namespace, holder string, duration time.Duration, clk clock.Clock, log *slog.Logger) *Locker {
	return &Locker{client: client, namespace: namespace, holder: holder, duration: duration, clock: clk, log: log, local: map[string]bool{}}
}

// Name is the lease's object name for a node.
func Name(node string) string {
	n := "lastcall-" + node
	if len(n) > 253 {
		n = n[:253]
	}
	return strings.TrimRight(n, "-.")
}

// Held is a lease this replica holds and renews until Release.
type Held struct {
	l      *Locker
	node   string
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Acquire takes the node's lease if it is free, expired, or already ours,
// and renews it in the background. It returns ErrHeld when another live
// replica holds it.
func (l *Locker) Acquire(ctx context.Context, node string) (*Held, error) {
	l.mu.Lock()
	if l.local[node] {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: another worker of this replica holds node %s", ErrHeld, node)
	}
	l.local[node] = true
	l.mu.Unlock()
	if err := l.take(ctx, node); err != nil {
		l.unmark(node)
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Held{l: l, node: node, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go h.renew(rctx)
	return h, nil
}

func (l *Locker) unmark(node string) {
	l.mu.Lock()
	delete(l.local, node)
	l.mu.Unlock()
}

func (l *Locker) take(ctx context.Context, node string) error {
	leases := l.client.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(l.clock.Now())
	secs := int32(l.duration / time.Second)
	cur, err := leases.Get(ctx, Name(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: Name(node), Namespace: l.namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "lastcall"}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &l.holder, LeaseDurationSeconds: &secs,
				AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return ErrHeld
		}
		if err != nil {
			return fmt.Errorf("creating lease for node %s: %w", node, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lease for node %s: %w", node, err)
	}
	if h := cur.Spec.HolderIdentity; h != nil && *h != "" && *h != l.holder && !l.expired(cur) {
		return fmt.Errorf("%w: %s holds node %s", ErrHeld, *h, node)
	}
	if cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.holder {
		cur.Spec.AcquireTime = &now
		if cur.Spec.LeaseTransitions == nil {
			cur.Spec.LeaseTransitions = new(int32)
		}
		*cur.Spec.LeaseTransitions++
	}
	cur.Spec.HolderIdentity, cur.Spec.RenewTime, cur.Spec.LeaseDurationSeconds = &l.holder, &now, &secs
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return ErrHeld // someone else took it between our read and write
	}
	if err != nil {
		return fmt.Errorf("taking lease for node %s: %w", node, err)
	}
	return nil
}

func (l *Locker) expired(le *coordinationv1.Lease) bool {
	if le.Spec.RenewTime == nil || le.Spec.LeaseDurationSeconds == nil {
		return true
	}
	end := le.Spec.RenewTime.Add(time.Duration(*le.Spec.LeaseDurationSeconds) * time.Second)
	return l.clock.Now().After(end)
}

// Lost is closed if the lease could not be renewed: another replica may
// now take the node, so work under the lease must stop.
func (h *Held) Lost() <-chan struct{} { return h.lost }

func (h *Held) renew(ctx context.Context) {
	defer close(h.done)
	every := h.l.duration / 3
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.l.clock.After(every):
		}
		if err := h.l.take(ctx, h.node); err != nil {
			if ctx.Err() != nil {
				return
			}
			h.l.log.Warn("lease renewal failed; stopping work on the node", "node", h.node, "err", err)
			close(h.lost)
			return
		}
	}
}

// Release stops renewing and gives the lease up, so another replica can
// take the node at once.
func (h *Held) Release(ctx context.Context) {
	h.once.Do(func() {
		h.cancel()
		<-h.done
		defer h.l.unmark(h.node)
		leases := h.l.client.CoordinationV1().Leases(h.l.namespace)
		cur, err := leases.Get(ctx, Name(h.node), metav1.GetOptions{})
		if err != nil || cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != h.l.holder {
			return
		}
		cur.Spec.HolderIdentity = nil
		if _, err := leases.Update(ctx, cur, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			h.l.log.Warn("releasing lease failed; it will expire", "node", h.node, "err", err)
		}
	})
}
