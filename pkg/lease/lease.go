// Package lease gives a replica of the queue processor the exclusive right
// to work on one node, through a coordination.k8s.io Lease per node. A
// replica that dies stops renewing; once the lease expires another replica
// can take it and finish the work. The workers of one replica share its
// right to a node: several messages about one node are worked on together.
//
// Expiry is judged as client-go's leader election judges it: by when this
// process last saw the Lease change, on its own clock, never by the
// holder's renewTime, which another machine's clock wrote.
//
// A holder renews every third of the lease duration and retries a failed
// renewal every tenth of it. It gives the lease up, closing Lost, when no
// renewal has succeeded for the renew deadline (two thirds of the
// duration) on its own clock: a replica cut off from the API server stops
// work on the node before another replica, which waits the whole duration
// from when it saw the last renewal, may take it. Every renewal call is
// bounded by what is left of the deadline. A renewal that finds another
// holder loses the lease at once.
//
// A Lease names its Node as its owner, so the garbage collector deletes it
// with the node.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	// every is how often a holder renews, retry how soon it tries again
	// after a failed renewal, and renewDeadline how long it keeps the
	// lease without a successful renewal.
	every, retry, renewDeadline time.Duration
	clock                       clock.Clock
	log                         *slog.Logger
	metrics                     *metrics
	// nodeUID, when set, gives the UID of a node, to name it the owner of
	// its Lease.
	nodeUID func(node string) (types.UID, bool)

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

// Option configures a Locker.
type Option func(*Locker)

// WithRegistry registers the Locker's metrics with reg.
func WithRegistry(reg prometheus.Registerer) Option {
	return func(l *Locker) { l.metrics.register(reg) }
}

// WithNodeUID has each Lease name its Node as its owner, so that it is
// deleted with the node; uid gives a node's UID, false when it is not
// known (the Lease then has no owner).
func WithNodeUID(uid func(node string) (types.UID, bool)) Option {
	return func(l *Locker) { l.nodeUID = uid }
}

// NewLocker returns a Locker whose leases, named "lastcall-<node>" in
// namespace, last duration unless renewed (every third of it). A holder
// gives a lease up when it has not renewed it for two thirds of duration.
func NewLocker(client kubernetes.Interface, namespace, holder string, duration time.Duration, clk clock.Clock, log *slog.Logger, opts ...Option) *Locker {
	l := &Locker{client: client, namespace: namespace, holder: holder, duration: duration,
		every: duration / 3, retry: duration / 10, renewDeadline: duration * 2 / 3,
		clock: clk, log: log, metrics: newMetrics(),
		held: map[string]*shared{}, locks: map[string]*nodeLock{}, seen: map[string]observed{}}
	for _, o := range opts {
		o(l)
	}
	return l
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
	at := l.clock.Now()
	// Bounded, as every call of the Locker: a replica cut off from the API
	// server must not keep a worker, and its message, waiting forever.
	tctx, cancel := context.WithTimeout(ctx, l.renewDeadline)
	err := l.take(tctx, node)
	cancel()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &shared{node: node, refs: 1, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	l.mu.Lock()
	l.held[node] = s
	l.mu.Unlock()
	go l.renew(rctx, s, at)
	return &Held{l: l, s: s}, nil
}

func (l *Locker) take(ctx context.Context, node string) error {
	leases := l.client.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(l.clock.Now())
	secs := int32(l.duration / time.Second)
	cur, err := leases.Get(ctx, Name(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: Name(node), Namespace: l.namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "lastcall"},
				OwnerReferences: l.owner(node, nil)},
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
	cur.OwnerReferences = l.owner(node, cur.OwnerReferences)
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

// owner is the owner references a node's Lease should have: the node, when
// its UID is known; else those it has.
func (l *Locker) owner(node string, have []metav1.OwnerReference) []metav1.OwnerReference {
	if l.nodeUID == nil {
		return have
	}
	uid, ok := l.nodeUID(node)
	if !ok {
		return have
	}
	// No blockOwnerDeletion: the node's deletion must never wait for it,
	// and setting it would need the nodes/finalizers permission.
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: uid}}
}

// Lost is closed when the lease is given up while in use: no renewal has
// succeeded for the renew deadline, or another replica holds it. Another
// replica may soon take the node, so work under the lease must stop.
func (h *Held) Lost() <-chan struct{} { return h.s.lost }

// renew renews s's lease from last, when it was taken, until ctx ends or
// the lease is lost.
func (l *Locker) renew(ctx context.Context, s *shared, last time.Time) {
	defer close(s.done)
	log := l.log.With("node", s.node)
	next := last.Add(l.every)
	for {
		deadline := last.Add(l.renewDeadline)
		if next.After(deadline) {
			next = deadline
		}
		if d := next.Sub(l.clock.Now()); d > 0 {
			t := l.clock.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
		at := l.clock.Now()
		if !at.Before(deadline) {
			l.metrics.losses.WithLabelValues(lossDeadline).Inc()
			log.Error("lease lost: no renewal succeeded within the renew deadline; stopping work on the node",
				"renew_deadline", l.renewDeadline, "last_renewal", last)
			close(s.lost)
			return
		}
		err := l.attempt(ctx, s.node, deadline.Sub(at))
		switch {
		case err == nil:
			last, next = at, at.Add(l.every)
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrHeld):
			l.metrics.losses.WithLabelValues(lossTaken).Inc()
			log.Error("lease lost: another replica holds it; stopping work on the node", "err", err)
			close(s.lost)
			return
		default:
			reason := failureError
			if errors.Is(err, context.DeadlineExceeded) {
				reason = failureTimeout
			}
			l.metrics.renewalFailures.WithLabelValues(reason).Inc()
			log.Warn("lease renewal failed; will retry until the renew deadline", "err", err,
				"retry_in", l.retry, "deadline_in", deadline.Sub(l.clock.Now()))
			next = l.clock.Now().Add(l.retry)
		}
	}
}

// attempt renews node's lease once, for at most timeout: a call hung on a
// dead connection is abandoned then, whether or not it heeds its context.
func (l *Locker) attempt(ctx context.Context, node string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		defer l.lockNode(node)()
		res <- l.take(ctx, node)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("renewing lease for node %s: %w", node, ctx.Err())
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
		ctx, cancel := context.WithTimeout(ctx, l.renewDeadline)
		defer cancel()
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
