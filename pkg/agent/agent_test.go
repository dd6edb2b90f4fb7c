package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
)

// chanSource sends what the test gives it.
type chanSource chan interruption.Event

func (chanSource) Name() string { return "test" }
func (c chanSource) Run(ctx context.Context, out chan<- interruption.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-c:
			out <- e
		}
	}
}

// nodes records holds and releases; failHolds makes that many Holds fail.
type nodes struct {
	mu        sync.Mutex
	held      map[string]bool
	failHolds int
	changed   chan string
}

func (n *nodes) Hold(_ context.Context, _ string, ev interruption.Event) (node.Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failHolds > 0 {
		n.failHolds--
		n.changed <- "hold-failed " + ev.ID
		return node.Change{}, errors.New("apiserver unavailable")
	}
	n.held[ev.ID] = true
	n.changed <- "hold " + ev.ID
	return node.Change{Tainted: true}, nil
}

func (n *nodes) Release(_ context.Context, _ string, id string) (node.Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.held[id] {
		return node.Change{Unchanged: true}, nil
	}
	delete(n.held, id)
	n.changed <- "release " + id
	return node.Change{Untainted: true}, nil
}

func (n *nodes) RecordDrain(context.Context, string, string, string) error { return nil }
func (n *nodes) State(context.Context, string) (node.State, *corev1.Node, error) {
	return node.State{}, &corev1.Node{}, nil
}

// drainer blocks each drain until the test lets it finish or it is
// cancelled, and reports which event's drain started.
type drainer struct {
	started chan string
	finish  chan struct{}
}

func (d *drainer) Drain(ctx context.Context, req drain.Request) (drain.Result, error) {
	d.started <- req.Kind
	select {
	case <-ctx.Done():
		return drain.Result{}, ctx.Err()
	case <-d.finish:
		return drain.Result{}, nil
	}
}

func start(t *testing.T, n *nodes, d *drainer) chanSource {
	t.Helper()
	return startWith(t, n, d, nil)
}

func startWith(t *testing.T, n *nodes, d *drainer, notifier Notifier) chanSource {
	t.Helper()
	src := make(chanSource)
	synced := make(chan struct{})
	a := New(Options{Node: "n", FallbackDeadline: time.Minute, RetryInterval: 10 * time.Millisecond, Notifier: notifier},
		[]interruption.Source{src}, n, d, record.NewFakeRecorder(100), synced, prometheus.NewRegistry(),
		slog.New(slog.DiscardHandler), clock.RealClock{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return src
}

func expect[T comparable](t *testing.T, c <-chan T, want T) {
	t.Helper()
	select {
	case got := <-c:
		if got != want {
			t.Fatalf("got %v, want %v", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %v", want)
	}
}

func ev(kind interruption.Kind, action interruption.Action) interruption.Event {
	return interruption.Event{ID: string(kind), Kind: kind, Action: action, Observed: time.Now()}
}

// A drain stopped because its notice was withdrawn hands over to another
// notice that still asks for a drain.
func TestCancelledDrainHandsOverToPendingNotice(t *testing.T) {
	n := &nodes{held: map[string]bool{}, changed: make(chan string, 16)}
	d := &drainer{started: make(chan string, 4), finish: make(chan struct{})}
	src := start(t, n, d)

	src <- ev(interruption.KindScheduledMaintenance, interruption.ActionDrain)
	expect(t, n.changed, "hold scheduled-maintenance")
	expect(t, d.started, "scheduled-maintenance")
	src <- ev(interruption.KindSpotInterruption, interruption.ActionDrain) // arrives mid-drain
	expect(t, n.changed, "hold spot-interruption")
	src <- ev(interruption.KindScheduledMaintenance, interruption.ActionCancel)
	expect(t, n.changed, "release scheduled-maintenance")
	expect(t, d.started, "spot-interruption")
}

// A hold that failed and waits for its retry is dropped if its notice is
// withdrawn meanwhile: the retry must not cordon the node again.
func TestRetriedHoldOfWithdrawnNoticeIsDropped(t *testing.T) {
	n := &nodes{held: map[string]bool{}, changed: make(chan string, 16), failHolds: 1}
	d := &drainer{started: make(chan string, 4), finish: make(chan struct{})}
	src := start(t, n, d)

	src <- ev(interruption.KindRebalance, interruption.ActionCordon)
	expect(t, n.changed, "hold-failed rebalance-recommendation")
	src <- ev(interruption.KindRebalance, interruption.ActionCancel)
	// A later, unrelated notice proves the loop went on past the retry.
	src <- ev(interruption.KindSpotInterruption, interruption.ActionCordon)
	expect(t, n.changed, "hold spot-interruption")
	select {
	case c := <-n.changed:
		t.Fatalf("unexpected node change %q after the notice was withdrawn", c)
	case <-time.After(100 * time.Millisecond): // several retry intervals: a retry would have come
	}
}

// notes records what the agent tells its notifier, as "notify <phase>
// <kind> <result>" and "forget <key>".
type notes chan string

func (c notes) Notify(m notify.Notification) {
	if m.Node != "n" || m.Mode != "agent" || m.Instance != "" {
		c <- "bad notification: " + m.Node + "/" + m.Mode + "/" + m.Instance
		return
	}
	if m.Phase == notify.PhaseReceived && m.Action == "drain" && m.Deadline.IsZero() {
		c <- "received without the drain's deadline"
		return
	}
	c <- strings.TrimSpace("notify " + string(m.Phase) + " " + m.Kind + " " + m.Result)
}

func (c notes) Forget(key string) { c <- "forget " + key }

// The notifier hears of each hold and each drain that ended, not of a
// drain stopped by a withdrawn notice, and the episode ends with the
// node's last notice.
func TestNotifications(t *testing.T) {
	n := &nodes{held: map[string]bool{}, changed: make(chan string, 16)}
	d := &drainer{started: make(chan string, 4), finish: make(chan struct{})}
	note := make(notes, 16)
	src := startWith(t, n, d, note)

	src <- ev(interruption.KindSpotInterruption, interruption.ActionDrain)
	expect(t, note, "notify received spot-interruption")
	expect(t, d.started, "spot-interruption")
	src <- ev(interruption.KindRebalance, interruption.ActionCordon) // another hold: the notifier dedupes
	expect(t, note, "notify received rebalance-recommendation")
	d.finish <- struct{}{}
	expect(t, note, "notify finished spot-interruption success")

	src <- ev(interruption.KindSpotInterruption, interruption.ActionCancel) // the rebalance hold stays
	expect(t, n.changed, "hold spot-interruption")
	expect(t, n.changed, "hold rebalance-recommendation")
	expect(t, n.changed, "release spot-interruption")
	src <- ev(interruption.KindRebalance, interruption.ActionCancel)
	expect(t, note, "forget n") // only with the last

	// A drain stopped by its withdrawn notice is not told as finished.
	src <- ev(interruption.KindScheduledMaintenance, interruption.ActionDrain)
	expect(t, note, "notify received scheduled-maintenance")
	expect(t, d.started, "scheduled-maintenance")
	src <- ev(interruption.KindScheduledMaintenance, interruption.ActionCancel)
	expect(t, note, "forget n")
	// The next drain starts only once the stopped one's end was handled.
	src <- ev(interruption.KindASGTermination, interruption.ActionDrain)
	expect(t, note, "notify received asg-termination")
	expect(t, d.started, "asg-termination")
	select {
	case got := <-note:
		t.Fatalf("unexpected %q", got)
	default:
	}
}
