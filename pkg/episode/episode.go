// Package episode is a node's interruption episode: the notices in force
// for the node, its hold, its drain and how that ended, the Events and
// notifications that tell of it, and the steps the cloud waits for once it
// is over (completing a lifecycle action, approving a scheduled event).
// Both of lastcall's modes use it: the node agent and the queue processor
// are front ends that turn signals into notices.
//
// The rules:
//   - Each notice is held on the node (taint, cordon, out of load
//     balancers) by the Manager's owner, who alone releases it.
//   - The drain works to the earliest deadline of the drain notices in
//     force. A notice that arrives while the drain runs joins it; an
//     earlier deadline re-plans the running drain in place.
//   - When the drain ends, the completers of the notices it covered run,
//     with its outcome, and their Tickets end.
//   - A drain notice that arrives after the drain has ended starts a new
//     pass over the node (what came back since is evicted).
//   - The episode ends when its last notice is withdrawn or the node is
//     gone; the next interruption starts a new one.
package episode

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/pkg/volumes"
)

// Notice is an interruption notice for a node.
type Notice struct {
	interruption.Event
	// Instance is the cloud instance the node runs on, when the front end
	// knows it; notifications name it.
	Instance string
	// Completer, if set, is what the cloud waits for once the drain that
	// covered the notice has ended.
	Completer Completer
}

// Completer is a step the cloud waits for after a drain: completing an
// Auto Scaling lifecycle action, approving an Azure scheduled event. It is
// an explicit step, run once per notice.
type Completer interface {
	// Name names the step in logs, e.g. "asg-lifecycle".
	Name() string
	// KeepAlive runs while the drain covering the notice runs, and
	// returns when ctx ends (lifecycle heartbeats).
	KeepAlive(ctx context.Context)
	// Complete runs once the drain covering the notice has ended, with
	// how it ended.
	Complete(ctx context.Context, o drain.Outcome) error
}

// Ending is how a notice's part in an episode ended.
type Ending struct {
	// Outcome is how the drain that covered the notice ended; empty for a
	// notice that asks only for a cordon.
	Outcome drain.Outcome
	// CompleteErr is the completer's error, if it failed.
	CompleteErr error
	// Interrupted says lastcall stopped working on the notice before its
	// end (shutting down, or the front end dropped it): the front end
	// should try it again.
	Interrupted bool
}

// Ticket follows one notice to its end.
type Ticket struct {
	done     chan struct{}
	ending   Ending
	held     chan struct{}
	heldOnce sync.Once
}

func newTicket() *Ticket { return &Ticket{done: make(chan struct{}), held: make(chan struct{})} }

// Held is closed once the node is held for the notice (or the notice's
// part is over without a hold).
func (t *Ticket) Held() <-chan struct{} { return t.held }

func (t *Ticket) markHeld() { t.heldOnce.Do(func() { close(t.held) }) }

// Done is closed once the notice's part is over: its node held (a cordon
// notice), or the drain that covered it ended and its completer ran.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Ending is how it ended, once Done is closed.
func (t *Ticket) Ending() Ending {
	<-t.done
	return t.ending
}

func (t *Ticket) end(e Ending) {
	t.ending = e
	t.markHeld()
	close(t.done)
}

// NodeClient holds and releases nodes (see package node).
type NodeClient interface {
	Hold(ctx context.Context, name string, ev interruption.Event) (node.Change, error)
	Release(ctx context.Context, name, id string) (node.Change, error)
	RecordDrain(ctx context.Context, name, outcome string, ids ...string) error
	State(ctx context.Context, name string) (node.State, *corev1.Node, error)
	Owner() node.Owner
}

// Drainer starts drains (see package drain).
type Drainer interface {
	Start(ctx context.Context, req drain.Request) Drain
}

// Drain is a drain in progress (a *drain.Run).
type Drain interface {
	Retarget(deadline time.Time)
	Done() <-chan struct{}
	Result() (drain.Result, error)
}

// DrainerOf adapts a *drain.Drainer.
func DrainerOf(d *drain.Drainer) Drainer { return drainer{d} }

type drainer struct{ d *drain.Drainer }

func (d drainer) Start(ctx context.Context, req drain.Request) Drain { return d.d.Start(ctx, req) }

// Notifier tells a webhook of interruptions (see package notify).
type Notifier interface {
	Notify(notify.Notification)
	Forget(key string)
}

// Options tune a Manager.
type Options struct {
	// FallbackDeadline is the deadline of a drain whose notice names none.
	FallbackDeadline time.Duration
	// DryRun: the node client and the drainer change nothing, and
	// completers are not run.
	DryRun bool
	// Retry paces retries of failed holds and releases.
	Retry wait.Backoff
	// CompleteTimeout bounds a completer's Complete.
	CompleteTimeout time.Duration
	// CordonOnly holds the node for every notice and drains for none: a
	// drain notice's completer runs once the node is held, with
	// drain.CordonOnly.
	CordonOnly bool
	// TaintEffect is the effect of the taint a hold puts on the node.
	TaintEffect corev1.TaintEffect
}

// DefaultRetry paces retries of failed holds and releases: 1 s, doubling
// to 30 s, with jitter.
var DefaultRetry = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 30 * time.Second}

// VolumeWaiter waits for a node's volumes to be detached (see package
// volumes).
type VolumeWaiter interface {
	Wait(ctx context.Context, node string, until time.Time, waiting func()) volumes.Result
}

// Deps are what a Manager works with.
type Deps struct {
	Nodes    NodeClient
	Drainer  Drainer
	Events   record.EventRecorder
	Notifier Notifier
	// Volumes, when set, is waited on after a drain that finished and
	// before a completer lets the cloud take the instance.
	Volumes VolumeWaiter
	// DrainGate, when set, is waited on before a node's first drain pass
	// starts (its hold is not): the queue processor holds back the drains
	// of a burst of notices until every node named is held.
	DrainGate func(ctx context.Context)
	Registry  prometheus.Registerer
	Log       *slog.Logger
	Clock     clock.WithTicker
}

// ErrStopped is returned by a Manager that has stopped.
var ErrStopped = errors.New("episode manager stopped")

// Manager runs the episodes of the nodes its front end reports notices
// for, one goroutine each.
type Manager struct {
	opts    Options
	deps    Deps
	metrics *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	episodes map[string]*episode
	stopped  bool
}

// New returns a Manager. Call Run.
func New(o Options, d Deps) *Manager {
	if o.Retry.Duration == 0 {
		o.Retry = DefaultRetry
	}
	if o.CompleteTimeout == 0 {
		o.CompleteTimeout = 2 * time.Minute
	}
	if d.Notifier == nil {
		d.Notifier = noNotifier{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{opts: o, deps: d, metrics: newMetrics(d.Registry), ctx: ctx, cancel: cancel, episodes: map[string]*episode{}}
}

// GateDrains sets Deps.DrainGate. Call it before the first Add.
func (m *Manager) GateDrains(gate func(ctx context.Context)) { m.deps.DrainGate = gate }

// Run returns once ctx has ended and every episode has stopped: running
// drains are stopped, holds stay on their nodes, completers do not run,
// and open Tickets end Interrupted.
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

// Add puts a notice in force for node: the node is held for it, and
// drained if it asks. It returns at once; the Ticket follows the notice.
// A notice already in force (the same ID) is not acted on again: the new
// Ticket follows the same notice.
func (m *Manager) Add(nodeName string, n Notice) (*Ticket, error) {
	t := newTicket()
	return t, m.do(nodeName, func(e *episode) { e.add(n, t) })
}

// Withdraw ends a notice the cloud withdrew: its hold is released, and a
// drain no other drain notice needs is stopped.
func (m *Manager) Withdraw(nodeName string, ev interruption.Event) error {
	return m.do(nodeName, func(e *episode) { e.withdraw(ev, true) })
}

// Drop stops working on a notice without releasing its hold: another
// process takes it over (the queue processor's lease was lost).
func (m *Manager) Drop(nodeName, id string) error {
	return m.do(nodeName, func(e *episode) { e.withdraw(interruption.Event{ID: id}, false) })
}

// NodeGone ends the node's episode: the node was deleted.
func (m *Manager) NodeGone(nodeName string) {
	m.mu.Lock()
	e := m.episodes[nodeName]
	m.mu.Unlock()
	if e != nil {
		e.enqueue(func() { e.nodeGone() })
	}
}

// ReleaseStale releases the holds the Manager's owner left on the node
// earlier (before a restart) whose notice is not in force now. Call it
// once every source has reported what is in force. It returns the error of
// reading the node, to be tried again.
func (m *Manager) ReleaseStale(ctx context.Context, nodeName string) error {
	errc := make(chan error, 1)
	if err := m.do(nodeName, func(e *episode) { errc <- e.releaseStale() }); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do runs f in the node's episode, starting one if there is none.
func (m *Manager) do(nodeName string, f func(*episode)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return ErrStopped
	}
	e := m.episodes[nodeName]
	if e == nil {
		e = newEpisode(m, nodeName)
		m.episodes[nodeName] = e
		m.wg.Go(func() { e.loop(m.ctx) })
	}
	e.enqueue(func() { f(e) })
	return nil
}

// end removes e if nothing is queued for it; it reports whether it did.
func (m *Manager) end(e *episode) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.queue) > 0 {
		return false
	}
	e.ended = true
	if m.episodes[e.node] == e {
		delete(m.episodes, e.node)
	}
	return true
}

// Active is the number of episodes running, for tests and metrics.
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.episodes)
}

type noNotifier struct{}

func (noNotifier) Notify(notify.Notification) {}
func (noNotifier) Forget(string)              {}
