package episode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// waitFor bounds every wait of these tests on something the episode does.
const waitFor = 10 * time.Second

// nodes is a NodeClient that records what it is asked, on a node of its
// own (its holds, with their owners). failHolds makes that many Holds fail.
type fakeNodes struct {
	owner node.Owner

	mu        sync.Mutex
	holds     map[string]node.Owner
	failHolds int
	recorded  map[string]string // hold ID to the drain's outcome
	calls     chan string
}

func newNodes(owner node.Owner) *fakeNodes {
	return &fakeNodes{owner: owner, holds: map[string]node.Owner{}, recorded: map[string]string{}, calls: make(chan string, 100)}
}

func (n *fakeNodes) Owner() node.Owner { return n.owner }

func (n *fakeNodes) Hold(_ context.Context, _ string, ev interruption.Event) (node.Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failHolds > 0 {
		n.failHolds--
		n.calls <- "hold-failed " + ev.ID
		return node.Change{}, errors.New("apiserver unavailable")
	}
	if _, ok := n.holds[ev.ID]; ok {
		return node.Change{Unchanged: true}, nil
	}
	first := len(n.holds) == 0
	n.holds[ev.ID] = n.owner
	n.calls <- "hold " + ev.ID
	return node.Change{Tainted: true, Cordoned: first}, nil
}

func (n *fakeNodes) Release(_ context.Context, _ string, id string) (node.Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if owner, ok := n.holds[id]; !ok || owner != n.owner {
		return node.Change{Unchanged: true}, nil
	}
	delete(n.holds, id)
	n.calls <- "release " + id
	return node.Change{Untainted: true, Uncordoned: len(n.holds) == 0}, nil
}

func (n *fakeNodes) RecordDrain(_ context.Context, _ string, outcome string, ids ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range ids {
		n.recorded[id] = outcome
	}
	return nil
}

func (n *fakeNodes) State(context.Context, string) (node.State, *corev1.Node, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var st node.State
	for id, owner := range n.holds {
		st.Holds = append(st.Holds, node.Hold{ID: id, Owner: owner})
	}
	return st, &corev1.Node{}, nil
}

// fakeDrainer hands each drain it starts to the test, which ends it.
type fakeDrainer struct{ started chan *fakeDrain }

type fakeDrain struct {
	req       drain.Request
	ctx       context.Context
	retargets chan time.Time
	done      chan struct{}
	once      sync.Once
	outcome   drain.Outcome
}

func (d *fakeDrainer) Start(ctx context.Context, req drain.Request) Drain {
	f := &fakeDrain{req: req, ctx: ctx, retargets: make(chan time.Time, 10), done: make(chan struct{})}
	go func() {
		<-ctx.Done()
		f.end(drain.Cancelled)
	}()
	d.started <- f
	return f
}

func (f *fakeDrain) Retarget(t time.Time)  { f.retargets <- t }
func (f *fakeDrain) Done() <-chan struct{} { return f.done }
func (f *fakeDrain) Result() (drain.Result, error) {
	<-f.done
	return drain.Result{Outcome: f.outcome}, nil
}

func (f *fakeDrain) end(o drain.Outcome) {
	f.once.Do(func() {
		f.outcome = o
		close(f.done)
	})
}

// completer records its calls.
type completer struct {
	name      string
	completed chan drain.Outcome
	alive     chan struct{}
	err       error
}

func newCompleter(name string) *completer {
	return &completer{name: name, completed: make(chan drain.Outcome, 4), alive: make(chan struct{}, 4)}
}

func (c *completer) Name() string { return c.name }
func (c *completer) KeepAlive(ctx context.Context) {
	c.alive <- struct{}{}
	<-ctx.Done()
}
func (c *completer) Complete(_ context.Context, o drain.Outcome) error {
	c.completed <- o
	return c.err
}

// notifier records notifications and forgotten keys.
type notifier struct {
	mu     sync.Mutex
	sent   []notify.Notification
	forgot chan string
}

func (n *notifier) Notify(m notify.Notification) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, m)
}
func (n *notifier) Forget(key string) { n.forgot <- key }

type harness struct {
	m        *Manager
	nodes    *fakeNodes
	drains   chan *fakeDrain
	clock    *clocktesting.FakeClock
	events   *record.FakeRecorder
	notifier *notifier
	stop     func()
}

func start(t *testing.T, owner node.Owner, dryRun bool) *harness {
	t.Helper()
	h := &harness{nodes: newNodes(owner), drains: make(chan *fakeDrain, 10), clock: clocktesting.NewFakeClock(t0),
		events: record.NewFakeRecorder(100), notifier: &notifier{forgot: make(chan string, 10)}}
	h.m = New(Options{FallbackDeadline: 2 * time.Minute, DryRun: dryRun, Retry: wait.Backoff{Duration: time.Second, Factor: 2, Steps: 10, Cap: 8 * time.Second}},
		Deps{Nodes: h.nodes, Drainer: &fakeDrainer{started: h.drains}, Events: h.events, Notifier: h.notifier,
			Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Clock: h.clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.m.Run(ctx) }()
	h.stop = func() { cancel(); <-done }
	t.Cleanup(h.stop)
	return h
}

func drainNotice(kind interruption.Kind, id string, deadline time.Time, c Completer) Notice {
	return Notice{Event: interruption.Event{ID: id, Kind: kind, Action: interruption.ActionDrain, Deadline: deadline, Source: "test",
		Detail: string(kind)}, Completer: c}
}

func (h *harness) add(t *testing.T, n Notice) *Ticket {
	t.Helper()
	tk, err := h.m.Add("node-a", n)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func ended(t *testing.T, tk *Ticket, what string) Ending {
	t.Helper()
	recv(t, tk.Done(), what)
	return tk.Ending()
}

func expectCall(t *testing.T, h *harness, want string) {
	t.Helper()
	if got := recv(t, h.nodes.calls, want); got != want {
		t.Fatalf("node client: %q, want %q", got, want)
	}
}

// A maintenance drain days long, stuck on a budget, is re-planned in place
// to the 2 minutes a spot notice leaves; one drain covers both notices, and
// each completer runs once, after it.
func TestEarlierNoticeReplansRunningDrain(t *testing.T) {
	h := start(t, node.OwnerQueue, false)
	maint, spot := newCompleter("maintenance"), newCompleter("spot")
	tm := h.add(t, drainNotice(interruption.KindScheduledMaintenance, "m", t0.Add(72*time.Hour), maint))
	expectCall(t, h, "hold m")
	d := recv(t, h.drains, "the maintenance drain")
	if !d.req.Deadline.Equal(t0.Add(72 * time.Hour)) {
		t.Fatalf("drain deadline %s, want the maintenance window's", d.req.Deadline)
	}
	recv(t, maint.alive, "the maintenance completer kept alive")

	ts := h.add(t, drainNotice(interruption.KindSpotInterruption, "s", t0.Add(2*time.Minute), spot))
	expectCall(t, h, "hold s")
	if got := recv(t, d.retargets, "the drain re-planned"); !got.Equal(t0.Add(2 * time.Minute)) {
		t.Fatalf("re-planned to %s, want the spot deadline", got)
	}
	recv(t, spot.alive, "the spot completer kept alive")
	select {
	case <-h.drains:
		t.Fatal("a second drain started: the spot notice should join the running one")
	default:
	}
	d.end(drain.Drained)
	for _, c := range []*completer{maint, spot} {
		if o := recv(t, c.completed, c.name+" completed"); o != drain.Drained {
			t.Errorf("%s completed with %s", c.name, o)
		}
	}
	for _, tk := range []*Ticket{tm, ts} {
		if e := ended(t, tk, "the ticket"); e.Outcome != drain.Drained || e.Interrupted || e.CompleteErr != nil {
			t.Errorf("ending %+v, want drained", e)
		}
	}
	h.nodes.mu.Lock()
	defer h.nodes.mu.Unlock()
	if h.nodes.recorded["m"] != "success" || h.nodes.recorded["s"] != "success" {
		t.Errorf("outcome recorded on the node: %v", h.nodes.recorded)
	}
}

// Withdrawing the notice with the earliest deadline re-plans the drain to
// the next; withdrawing the last stops it and releases the holds.
func TestWithdrawnNoticesReplanThenStop(t *testing.T) {
	h := start(t, node.OwnerAgent, false)
	ta := h.add(t, drainNotice(interruption.KindSpotInterruption, "a", t0.Add(time.Minute), nil))
	expectCall(t, h, "hold a")
	d := recv(t, h.drains, "the drain")
	h.add(t, drainNotice(interruption.KindScheduledMaintenance, "b", t0.Add(time.Hour), nil))
	expectCall(t, h, "hold b")

	if err := h.m.Withdraw("node-a", interruption.Event{ID: "a", Kind: interruption.KindSpotInterruption}); err != nil {
		t.Fatal(err)
	}
	expectCall(t, h, "release a")
	if got := recv(t, d.retargets, "the re-plan"); !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("re-planned to %s, want b's deadline", got)
	}
	if e := ended(t, ta, "a's ticket"); !e.Interrupted {
		t.Errorf("withdrawn notice ended %+v, want interrupted", e)
	}
	if err := h.m.Withdraw("node-a", interruption.Event{ID: "b", Kind: interruption.KindScheduledMaintenance}); err != nil {
		t.Fatal(err)
	}
	expectCall(t, h, "release b")
	recv(t, d.ctx.Done(), "the drain stopped")
	recv(t, h.notifier.forgot, "the episode over")
}

// A node drained, released, then interrupted again by the same notice is
// drained again: a new episode.
func TestReleasedNodeIsDrainedAgain(t *testing.T) {
	h := start(t, node.OwnerAgent, false)
	n := drainNotice(interruption.KindHostMaintenance, "same", t0.Add(time.Minute), nil)
	for round := 1; round <= 2; round++ {
		tk := h.add(t, n)
		expectCall(t, h, "hold same")
		recv(t, h.drains, fmt.Sprintf("drain %d", round)).end(drain.Drained)
		if e := ended(t, tk, "the ticket"); e.Outcome != drain.Drained {
			t.Fatalf("round %d ended %+v", round, e)
		}
		if err := h.m.Withdraw("node-a", n.Event); err != nil {
			t.Fatal(err)
		}
		expectCall(t, h, "release same")
		recv(t, h.notifier.forgot, "the episode over")
	}
}

// A drain notice that comes after the drain has ended starts a new pass,
// to the earliest deadline in force, and its completer runs after that
// pass only.
func TestLateNoticeStartsNewPass(t *testing.T) {
	h := start(t, node.OwnerQueue, false)
	h.add(t, drainNotice(interruption.KindSpotInterruption, "spot", t0.Add(2*time.Minute), nil))
	expectCall(t, h, "hold spot")
	recv(t, h.drains, "the first pass").end(drain.Drained)

	hook := newCompleter("hook")
	h.clock.Step(10 * time.Second)
	tk := h.add(t, drainNotice(interruption.KindASGTermination, "hook", time.Time{}, hook))
	expectCall(t, h, "hold hook")
	d := recv(t, h.drains, "the second pass")
	if !d.req.Deadline.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("second pass works to %s, want the spot deadline still in force", d.req.Deadline)
	}
	select {
	case <-hook.completed:
		t.Fatal("the hook's completer ran before its pass ended")
	default:
	}
	d.end(drain.TimedOut)
	if o := recv(t, hook.completed, "the hook completed"); o != drain.TimedOut {
		t.Errorf("completed with %s, want timeout", o)
	}
	if e := ended(t, tk, "the ticket"); e.Outcome != drain.TimedOut {
		t.Errorf("ending %+v", e)
	}
}

// A failing hold is retried with backoff, and no drain starts before the
// node is held; a notice withdrawn meanwhile is not held at all.
func TestHoldRetried(t *testing.T) {
	h := start(t, node.OwnerAgent, false)
	h.nodes.mu.Lock()
	h.nodes.failHolds = 2
	h.nodes.mu.Unlock()
	h.add(t, drainNotice(interruption.KindSpotInterruption, "a", t0.Add(time.Minute), nil))
	expectCall(t, h, "hold-failed a")
	step := func() {
		if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, waitFor, true, func(context.Context) (bool, error) {
			return h.clock.HasWaiters(), nil
		}); err != nil {
			t.Fatal("no retry scheduled")
		}
		h.clock.Step(10 * time.Second)
	}
	step()
	expectCall(t, h, "hold-failed a")
	select {
	case <-h.drains:
		t.Fatal("drain started before the node was held")
	default:
	}
	step()
	expectCall(t, h, "hold a")
	recv(t, h.drains, "the drain")
}

// ReleaseStale releases the owner's holds whose notice is not in force,
// and leaves the other owner's and the ones in force.
func TestReleaseStaleOnlyOwnHolds(t *testing.T) {
	h := start(t, node.OwnerAgent, false)
	h.nodes.mu.Lock()
	h.nodes.holds = map[string]node.Owner{"agent-old": node.OwnerAgent, "queue-hook": node.OwnerQueue, "legacy": ""}
	h.nodes.mu.Unlock()
	h.add(t, Notice{Event: interruption.Event{ID: "agent-now", Kind: interruption.KindRebalance, Action: interruption.ActionCordon}})
	expectCall(t, h, "hold agent-now")
	if err := h.m.ReleaseStale(context.Background(), "node-a"); err != nil {
		t.Fatal(err)
	}
	expectCall(t, h, "release agent-old")
	h.nodes.mu.Lock()
	defer h.nodes.mu.Unlock()
	for _, id := range []string{"queue-hook", "legacy", "agent-now"} {
		if _, ok := h.nodes.holds[id]; !ok {
			t.Errorf("hold %s released", id)
		}
	}
}

// A node deleted while it drains ends the episode: the completers run,
// told the node is gone.
func TestNodeGoneRunsCompleters(t *testing.T) {
	h := start(t, node.OwnerQueue, false)
	c := newCompleter("hook")
	tk := h.add(t, drainNotice(interruption.KindASGTermination, "hook", time.Time{}, c))
	expectCall(t, h, "hold hook")
	recv(t, h.drains, "the drain")
	h.m.NodeGone("node-a")
	if o := recv(t, c.completed, "completed"); o != drain.NodeGone {
		t.Errorf("completed with %s, want node_gone", o)
	}
	if e := ended(t, tk, "the ticket"); e.Outcome != drain.NodeGone {
		t.Errorf("ending %+v", e)
	}
	recv(t, h.notifier.forgot, "the episode over")
}

// A dry run changes nothing the cloud waits on: no completer runs.
func TestDryRunCompletesNothing(t *testing.T) {
	h := start(t, node.OwnerQueue, true)
	c := newCompleter("hook")
	tk := h.add(t, drainNotice(interruption.KindASGTermination, "hook", time.Time{}, c))
	expectCall(t, h, "hold hook")
	recv(t, h.drains, "the drain").end(drain.DryRun)
	if e := ended(t, tk, "the ticket"); e.Outcome != drain.DryRun {
		t.Errorf("ending %+v", e)
	}
	select {
	case <-c.completed:
		t.Error("a dry run completed the lifecycle action")
	case <-c.alive:
		t.Error("a dry run sent heartbeats")
	default:
	}
}

// Stopping the Manager stops drains, leaves holds, runs no completer, and
// ends the Tickets interrupted, for the front end to try again.
func TestStopInterrupts(t *testing.T) {
	h := start(t, node.OwnerQueue, false)
	c := newCompleter("hook")
	tk := h.add(t, drainNotice(interruption.KindASGTermination, "hook", time.Time{}, c))
	expectCall(t, h, "hold hook")
	d := recv(t, h.drains, "the drain")
	h.stop()
	recv(t, d.ctx.Done(), "the drain stopped")
	if e := ended(t, tk, "the ticket"); !e.Interrupted {
		t.Errorf("ending %+v, want interrupted", e)
	}
	select {
	case <-c.completed:
		t.Error("completed while stopping")
	default:
	}
	if _, err := h.m.Add("node-a", drainNotice(interruption.KindSpotInterruption, "late", t0, nil)); !errors.Is(err, ErrStopped) {
		t.Errorf("Add after stop: %v, want ErrStopped", err)
	}
	h.nodes.mu.Lock()
	defer h.nodes.mu.Unlock()
	if _, ok := h.nodes.holds["hook"]; !ok {
		t.Error("the hold was released on stop")
	}
}

// The same notice added again (a redelivered message) follows the first:
// no second hold or drain, and both Tickets end together.
func TestSameNoticeFollowsFirst(t *testing.T) {
	h := start(t, node.OwnerQueue, false)
	n := drainNotice(interruption.KindSpotInterruption, "spot", t0.Add(2*time.Minute), nil)
	first := h.add(t, n)
	expectCall(t, h, "hold spot")
	d := recv(t, h.drains, "the drain")
	second := h.add(t, n)
	d.end(drain.Drained)
	for _, tk := range []*Ticket{first, second} {
		if e := ended(t, tk, "a ticket"); e.Outcome != drain.Drained {
			t.Errorf("ending %+v", e)
		}
	}
	third := h.add(t, n)
	if e := ended(t, third, "a ticket after the drain"); e.Outcome != drain.Drained {
		t.Errorf("ending %+v", e)
	}
	select {
	case <-h.drains:
		t.Error("the same notice started a second drain")
	default:
	}
}
