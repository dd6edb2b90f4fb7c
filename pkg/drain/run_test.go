package drain

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
)

// pods is a PodIndex the test controls: evicted or deleted pods leave it.
type pods struct {
	mu     sync.Mutex
	byName map[string]*corev1.Pod
	notify notifier
}

func newPods(ps ...*corev1.Pod) *pods {
	x := &pods{byName: map[string]*corev1.Pod{}}
	x.notify.init()
	for _, p := range ps {
		p.Spec.NodeName = "node-a"
		p.UID = types.UID("uid-" + p.Name)
		x.byName[p.Name] = p
	}
	return x
}

func (x *pods) OnNode(string) ([]*corev1.Pod, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*corev1.Pod
	for _, p := range x.byName {
		out = append(out, p)
	}
	return out, nil
}

func (x *pods) Get(_, name string) (*corev1.Pod, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, ok := x.byName[name]
	return p, ok
}

func (x *pods) Changed() <-chan struct{} { return x.notify.wait() }

func (x *pods) remove(name string) {
	x.mu.Lock()
	delete(x.byName, name)
	x.mu.Unlock()
	x.notify.broadcast()
}

// cluster answers evictions: a pod in blocked is refused with a 429 until
// unblocked; others are evicted and leave the index. Each answer is sent
// on calls, and a delete's grace on deleted.
type cluster struct {
	client  *fake.Clientset
	pods    *pods
	mu      sync.Mutex
	blocked map[string]bool
	calls   chan string
	deleted chan int64
}

func newCluster(t *testing.T, x *pods, blocked ...string) *cluster {
	t.Helper()
	budget := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "stuck", Namespace: "ns"}}
	c := &cluster{client: fake.NewClientset(budget), pods: x, blocked: map[string]bool{}, calls: make(chan string, 100), deleted: make(chan int64, 10)}
	for _, b := range blocked {
		c.blocked[b] = true
	}
	c.client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		c.mu.Lock()
		blocked := c.blocked[ev.Name]
		c.mu.Unlock()
		if blocked {
			c.calls <- "429 " + ev.Name
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		c.calls <- "evicted " + ev.Name
		x.remove(ev.Name)
		return true, nil, nil
	})
	c.client.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteAction)
		grace := int64(-1)
		if g := d.GetDeleteOptions().GracePeriodSeconds; g != nil {
			grace = *g
		}
		c.deleted <- grace
		x.remove(d.GetName())
		return true, nil, nil
	})
	return c
}

func (c *cluster) unblock(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.blocked, name)
}

func expectCall(t *testing.T, c <-chan string, want string) {
	t.Helper()
	select {
	case got := <-c:
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %q", want)
	}
}

// timerClock is a fake clock that tells of each timer once it is
// registered, so a test steps the clock only past a timer that exists: a
// timer registered after a step would count from the stepped time.
type timerClock struct {
	*clocktesting.FakeClock
	timers chan time.Duration
}

func newTimerClock(t0 time.Time) *timerClock {
	return &timerClock{FakeClock: clocktesting.NewFakeClock(t0), timers: make(chan time.Duration, 100)}
}

func (c *timerClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.timers <- d
	return ch
}

// waitTimer waits until a timer of d is registered.
func (c *timerClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-c.timers:
			if got == d {
				return
			}
		case <-deadline:
			t.Fatalf("no timer of %s was set", d)
		}
	}
}

func grace(s int64) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
}

// A drain blocked by a budget days before its deadline is retargeted to a
// deadline 30 s away: the blocked pod's override moment and grace follow
// the new deadline, and the pod is deleted in time to shut down.
func TestRetargetReplansBlockedEviction(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := newTimerClock(t0)
	x := newPods(pod("stuck", grace(60)))
	c := newCluster(t, x, "stuck")
	o := DefaultOptions()
	o.RetryInitial, o.RetryMax = time.Hour, time.Hour // only a re-plan or a budget wakes it
	d := New(c.client, x, record.NewFakeRecorder(100), prometheus.NewRegistry(), slog.New(slog.DiscardHandler), clk, o)
	run := d.Start(context.Background(), Request{Node: "node-a", Kind: "scheduled-maintenance", Deadline: t0.Add(72 * time.Hour)})
	expectCall(t, c.calls, "429 stuck")

	run.Retarget(t0.Add(30 * time.Second))
	if !run.Deadline().Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("deadline %s after the retarget", run.Deadline())
	}
	// Window 25 s (30 s less the 5 s margin): the pod asks 60 s, so it
	// gets half, and is deleted 12.5 s in, with 12 s of grace. The re-plan
	// (or the budget watch's first wake, which reads the new plan too)
	// retries and sets a timer for that moment.
	clk.waitTimer(t, 12*time.Second+500*time.Millisecond)
	clk.Step(12*time.Second + 500*time.Millisecond)
	select {
	case g := <-c.deleted:
		if g != 12 {
			t.Errorf("deleted with grace %d, want 12", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked pod was not deleted at its re-planned override moment")
	}
	res, err := run.Result()
	if err != nil || res.Outcome != Drained || len(res.Overridden) != 1 || !res.Deadline.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("result %+v, %v", res, err)
	}
}

// A pod its budget blocks is evicted as soon as a budget of its namespace
// changes, not at the end of its backoff.
func TestBudgetChangeRetriesEviction(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(t0)
	x := newPods(pod("web-0"), pod("web-1"))
	c := newCluster(t, x, "web-0")
	o := DefaultOptions()
	o.RetryInitial, o.RetryMax = time.Hour, time.Hour
	o.Policy = PolicyRespect
	d := New(c.client, x, record.NewFakeRecorder(100), prometheus.NewRegistry(), slog.New(slog.DiscardHandler), clk, o)
	run := d.Start(context.Background(), Request{Node: "node-a", Kind: "spot-interruption", Deadline: t0.Add(2 * time.Minute)})

	// The budget's watch starts with the first 429, and tells of the
	// budget it lists: each wake retries, and is refused while blocked.
	deadline := time.After(10 * time.Second)
	refused := 0
	for refused < 2 {
		select {
		case call := <-c.calls:
			if call == "429 web-0" {
				refused++
			}
		case <-deadline:
			t.Fatal("the blocked pod was not retried when its budget's watch started")
		}
	}
	c.unblock("web-0")
	b, err := c.client.PolicyV1().PodDisruptionBudgets("ns").Get(context.Background(), "stuck", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Status.DisruptionsAllowed = 1
	if _, err := c.client.PolicyV1().PodDisruptionBudgets("ns").UpdateStatus(context.Background(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case call := <-c.calls:
			if call != "evicted web-0" {
				continue
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the budget's change did not retry the eviction")
		}
		break
	}
	res, err := run.Result()
	if err != nil || res.Outcome != Drained || res.Evicted != 2 {
		t.Fatalf("result %+v, %v", res, err)
	}
	if !clk.Now().Equal(t0) {
		t.Error("the clock moved: the retry came from a backoff")
	}
	if errors.Is(err, ErrDeadline) {
		t.Fatal(err)
	}
}

// A pod bound to the node just before it was held, which the cache the
// drain started from did not show yet, is found by asking the API server
// once the cached pods are gone, and evicted too; so is nothing else the
// drain has already handled.
func TestDrainEvictsPodsTheCacheDidNotShow(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(t0)
	web := pod("web-0")
	x := newPods(web)
	c := newCluster(t, x)
	late := pod("late-0")
	late.Spec.NodeName, late.UID = "node-a", "uid-late-0"
	elsewhere := pod("other-0")
	elsewhere.Spec.NodeName, elsewhere.UID = "node-b", "uid-other-0"
	for _, p := range []*corev1.Pod{web, late, elsewhere} {
		if err := c.client.Tracker().Add(p.DeepCopy()); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	d := New(c.client, x, record.NewFakeRecorder(100), reg, slog.New(slog.DiscardHandler), clk, DefaultOptions())
	run := d.Start(context.Background(), Request{Node: "node-a", Kind: "spot-interruption", Deadline: t0.Add(2 * time.Minute)})
	expectCall(t, c.calls, "evicted web-0")
	expectCall(t, c.calls, "evicted late-0")
	res, err := run.Result()
	if err != nil || res.Outcome != Drained || res.Evicted != 2 {
		t.Fatalf("result %+v, %v; want both pods evicted", res, err)
	}
	select {
	case call := <-c.calls:
		t.Errorf("unexpected call %q: only the node's pods, once each", call)
	default:
	}
	if got := testutil.ToFloat64(d.metrics.late); got != 1 {
		t.Errorf("lastcall_pods_late_total = %v, want 1", got)
	}
}
