// Package lease gives a replica of the queue processor the exclusive right
// to work on one node, through a coordination.k8s.io Lease per node. A
// replica that dies stops renewing; once the lease expires another replica
// can take it and finish the work. The workers of one replica share its
// right to a node: several messages about one node are worked on together.
//
// Expiry is judged as client-go's leader election judges it: by when this
// process last saw the Lease change, on its own clock, never by the
// holder's renewTime, which another machine's clock wrote.
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

	mu sync.Mutex
	// held are the nodes this replica holds, shared by its workers.
	held map[string]*shared
	// locks serialise taking one node's lease; other nodes go on.
	locks map[string]*nodeLock
	// seen is, for each lease held by another replica, the version this
	// process last saw and when it first saw it.
	seen map[string]observed
}

type observed struct {
	resourceVersion string
	at              time.Time
}

// NewLocker returns a Locker whose leases, named "lastcall-<node>" in
// namespace, last duration unless renewed (every third of it).
func NewLocker(client kubernetes.Interface, namespace, holder string, duration time.Duration, clk clock.Clock, log *slog.Logger) *Locker {
	return &Locker{client: client, namespace: namespace, holder: holder, duration: duration, clock: clk, log: log,
		held: map[string]*shared{}, locks: map[string]*nodeLock{}, seen: map[string]observed{}}
}

type nodeLock struct {
	sync.Mutex
	refs int
}

// lockNode serialises work on node's lease and returns the unlock.
func (l *Locker) lockNode(node string) func() {
	l.mu.Lock()
	m := l.locks[node]
	if m == nil {
		m = &nodeLock{}
		l.locks[node] = m
	}
	m.refs++
	l.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		l.mu.Lock()
		if m.refs--; m.refs == 0 {
			delete(l.locks, node)
		}
		l.mu.Unlock()
	}
}

// Name is the lease's object name for a node.
func Name(node string) string {
	n := "lastcall-" + node
	if len(n) > 253 {
		n = n[:253]
	}
	return strings.TrimRight(n, "-.")
}

// shared is a lease this replica holds and renews while a worker uses it.
type shared struct {
	node   string
	refs   int
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Held is one worker's use of a lease this replica holds.
type Held struct {
	l    *Locker
	s    *shared
	once sync.Once
}

// Acquire takes the node's lease if it is free, expired, or already this
// replica's (then shared with the workers using it), and renews it in the
// background. It returns ErrHeld when another live replica holds it.
func (l *Locker) Acquire(ctx context.Context, node string) (*Held, error) {
	defer l.lockNode(node)()
	l.mu.Lock()
	if s := l.held[node]; s != nil {
		select {
		case <-s.lost:
		default:
			s.refs++
			l.mu.Unlock()
			return &Held{l: l, s: s}, nil
		}
	}
	l.mu.Unlock()
	if err := l.take(ctx, node); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &shared{node: node, refs: 1, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	l.mu.Lock()
	l.held[node] = s
	l.mu.Unlock()
	go l.renew(rctx, s)
	return &Held{l: l, s: s}, nil
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
	if h := cur.Spec.HolderIdentity; h != nil && *h != "" && *h != l.holder && !l.expired(node, cur) {
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
	l.mu.Lock()
	delete(l.seen, node)
	l.mu.Unlock()
	return nil
}

// expired says whether another replica's lease has gone unrenewed for its
// duration, as this process saw it: the duration counts from when this
// process first saw its current version.
func (l *Locker) expired(node string, le *coordinationv1.Lease) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	o, ok := l.seen[node]
	if !ok || o.resourceVersion != le.ResourceVersion {
		l.seen[node] = observed{resourceVersion: le.ResourceVersion, at: now}
		return false
	}
	d := l.duration
	if le.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*le.Spec.LeaseDurationSeconds) * time.Second
	}
	return now.Sub(o.at) > d
}

// Lost is closed if the lease could not be renewed: another replica may
// now take the node, so work under the lease must stop.
func (h *Held) Lost() <-chan struct{} { return h.s.lost }

func (l *Locker) renew(ctx context.Context, s *shared) {
	defer close(s.done)
	every := l.duration / 3
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.clock.After(every):
		}
		unlock := l.lockNode(s.node)
		err := l.take(ctx, s.node)
		unlock()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("lease renewal failed; stopping work on the node", "node", s.node, "err", err)
			close(s.lost)
			return
		}
	}
}

// Release ends this worker's use of the lease. The last worker to release
// it stops renewing and gives it up, so another replica can take the node
// at once.
func (h *Held) Release(ctx context.Context) {
	h.once.Do(func() {
		l, s := h.l, h.s
		unlock := l.lockNode(s.node)
		l.mu.Lock()
		s.refs--
		last := s.refs == 0
		if last && l.held[s.node] == s {
			delete(l.held, s.node)
		}
		l.mu.Unlock()
		unlock()
		if !last {
			return
		}
		s.cancel()
		<-s.done // renew takes the node's lock: wait for it unlocked
		defer l.lockNode(s.node)()
		l.mu.Lock()
		again := l.held[s.node] != nil
		l.mu.Unlock()
		if again {
			return // a worker took it again meanwhile
		}
		leases := l.client.CoordinationV1().Leases(l.namespace)
		cur, err := leases.Get(ctx, Name(s.node), metav1.GetOptions{})
		if err != nil || cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != l.holder {
			return
		}
		cur.Spec.HolderIdentity = nil
		if _, err := leases.Update(ctx, cur, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			l.log.Warn("releasing lease failed; it will expire", "node", s.node, "err", err)
		}
	})
}
