package drainability

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/lastcall/lastcall/pkg/drain"
)

// world is the caches a Controller reads, filled by hand; changes go
// through the Controller's handlers, as the informers would deliver them.
type world struct {
	t        *testing.T
	c        *Controller
	reg      *prometheus.Registry
	events   *record.FakeRecorder
	clock    *testingclock.FakeClock
	pods     cache.Indexer
	budgets  cache.Indexer
	services cache.Indexer

	mu       sync.Mutex
	nodes    []string
	draining map[string]bool
}

func newWorld(t *testing.T, nodes ...string) *world {
	t.Helper()
	ns := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	w := &world{
		t: t, reg: prometheus.NewRegistry(), events: record.NewFakeRecorder(100),
		clock:    testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		budgets:  cache.NewIndexer(cache.MetaNamespaceKeyFunc, ns),
		services: cache.NewIndexer(cache.MetaNamespaceKeyFunc, ns),
		pods: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{"node": func(obj any) ([]string, error) {
			return []string{obj.(*corev1.Pod).Spec.NodeName}, nil
		}}),
		nodes: nodes,
	}
	w.c = New(Options{Window: 2 * time.Minute, Drain: drain.DefaultOptions()}, Sources{
		Nodes: func() ([]string, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return append([]string(nil), w.nodes...), nil
		},
		Pods:     w,
		Budgets:  policylisters.NewPodDisruptionBudgetLister(w.budgets),
		Services: corelisters.NewServiceLister(w.services),
		Draining: func(node string) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.draining[node]
		},
	}, w.events, w.reg, slog.New(slog.DiscardHandler), w.clock)
	return w
}

// OnNode implements Pods.
func (w *world) OnNode(node string) ([]*corev1.Pod, error) {
	objs, err := w.pods.ByIndex("node", node)
	var pods []*corev1.Pod
	for _, o := range objs {
		pods = append(pods, o.(*corev1.Pod))
	}
	return pods, err
}

func (w *world) addPod(p *corev1.Pod) {
	w.t.Helper()
	if err := w.pods.Add(p); err != nil {
		w.t.Fatal(err)
	}
	w.c.PodHandler().OnAdd(p, false)
}

func (w *world) deletePod(p *corev1.Pod) {
	w.t.Helper()
	if err := w.pods.Delete(p); err != nil {
		w.t.Fatal(err)
	}
	w.c.PodHandler().OnDelete(cache.DeletedFinalStateUnknown{Key: p.Namespace + "/" + p.Name, Obj: p})
}

func (w *world) setBudget(b *policyv1.PodDisruptionBudget) {
	w.t.Helper()
	old, exists, _ := w.budgets.Get(b)
	if err := w.budgets.Update(b); err != nil {
		w.t.Fatal(err)
	}
	if exists {
		w.c.NamespacedHandler().OnUpdate(old, b)
	} else {
		w.c.NamespacedHandler().OnAdd(b, false)
	}
}

func (w *world) deleteBudget(b *policyv1.PodDisruptionBudget) {
	w.t.Helper()
	if err := w.budgets.Delete(b); err != nil {
		w.t.Fatal(err)
	}
	w.c.NamespacedHandler().OnDelete(b)
}

func (w *world) addService(s *corev1.Service) {
	w.t.Helper()
	if err := w.services.Add(s); err != nil {
		w.t.Fatal(err)
	}
	w.c.NamespacedHandler().OnAdd(s, false)
}

// removeNode deletes a node, and tells the Controller when seen.
func (w *world) removeNode(name string, seen bool) {
	w.mu.Lock()
	w.nodes = slices.DeleteFunc(w.nodes, func(n string) bool { return n == name })
	w.mu.Unlock()
	if seen {
		w.c.NodeHandler().OnDelete(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
}

// pass runs one evaluation pass of what changed, as Run does after its
// debounce.
func (w *world) pass() { w.c.pass(w.c.pending.take()) }

func (w *world) evaluations() float64 { return testutil.ToFloat64(w.c.metrics.evaluations) }

func (w *world) gauge(node, reason string) float64 {
	return testutil.ToFloat64(w.c.metrics.blockers.WithLabelValues(node, reason))
}

// event returns the next Event recorded, or "" when there is none.
func (w *world) event() string {
	select {
	case e := <-w.events.Events:
		return e
	default:
		return ""
	}
}

var rev int

type podOpt func(*corev1.Pod)

func pod(ns, name, node string, opts ...podOpt) *corev1.Pod {
	rev++
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": strings.TrimRight(name, "-0123456789")},
			ResourceVersion: fmt.Sprint(rev),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers: []corev1.Container{{Name: "c", Image: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func bare(p *corev1.Pod) { p.OwnerReferences = nil }

func emptyDir(p *corev1.Pod) {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
}

func grace(s int64) podOpt { return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s } }

func budget(ns, app string, allowed int32) *policyv1.PodDisruptionBudget {
	rev++
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app, ResourceVersion: fmt.Sprint(rev)},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: allowed},
	}
}

func service(ns, app string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}}}
}

// Every reason has a series for the node, zero or not, counting pods.
func TestGaugeCountsEveryReason(t *testing.T) {
	w := newWorld(t, "n1")
	w.addPod(pod("shop", "web-1", "n1"))
	w.addPod(pod("shop", "web-2", "n1", emptyDir, emptyDir))
	w.addPod(pod("shop", "cron-1", "n1", bare))
	w.addPod(pod("shop", "db-1", "n1", grace(600)))
	w.addPod(pod("shop", "other-1", "n2", bare)) // another node
	w.setBudget(budget("shop", "web", 0))
	w.setBudget(budget("shop", "db", 1)) // allows a disruption: no blocker
	w.pass()

	want := `
# HELP lastcall_drain_blockers Pods on the node that would block or degrade a drain of it started now, by reason (pdb-allows-no-disruption, no-controller, emptydir, no-prestop-behind-service, only-ready-endpoint, grace-exceeds-deadline). Unlike lastcall's other metrics it has a node label: one series per reason for each node of the cluster, exported by the one process that keeps every node's drainability (the queue processor, or --mode=drainability); a node's series go with the node.
# TYPE lastcall_drain_blockers gauge
lastcall_drain_blockers{node="n1",reason="emptydir"} 1
lastcall_drain_blockers{node="n1",reason="grace-exceeds-deadline"} 1
lastcall_drain_blockers{node="n1",reason="no-controller"} 1
lastcall_drain_blockers{node="n1",reason="no-prestop-behind-service"} 0
lastcall_drain_blockers{node="n1",reason="only-ready-endpoint"} 0
lastcall_drain_blockers{node="n1",reason="pdb-allows-no-disruption"} 2
`
	if err := testutil.GatherAndCompare(w.reg, strings.NewReader(want), "lastcall_drain_blockers"); err != nil {
		t.Fatal(err)
	}
	// A Service in front of pods without a preStop hook.
	w.addService(service("shop", "web"))
	w.pass()
	if got := w.gauge("n1", "no-prestop-behind-service"); got != 2 {
		t.Errorf("no-prestop-behind-service = %v, want 2", got)
	}
	if got := w.evaluations(); got != 2 {
		t.Errorf("evaluations = %v, want 2", got)
	}
}

// An Event when the blockers change, none when they do not: DrainBlocked
// naming reasons and pods, DrainUnblocked when none is left.
// While its node drains, a change of blockers sets the gauge and records
// no Event; once the drain is over, a node left clean records none either.
func TestNoEventsWhileDraining(t *testing.T) {
	w := newWorld(t, "n1")
	w.addPod(pod("shop", "web-1", "n1"))
	w.addPod(pod("shop", "web-2", "n1"))
	w.pass()
	w.mu.Lock()
	w.draining = map[string]bool{"n1": true}
	w.mu.Unlock()
	w.setBudget(budget("shop", "web", 0))
	w.pass()
	if got := w.gauge("n1", "pdb-allows-no-disruption"); got != 2 {
		t.Errorf("pdb-allows-no-disruption = %v while draining, want 2", got)
	}
	if e := w.event(); e != "" {
		t.Fatalf("Event while draining: %q", e)
	}
	w.deletePod(pod("shop", "web-1", "n1"))
	w.deletePod(pod("shop", "web-2", "n1"))
	w.mu.Lock()
	w.draining = nil
	w.mu.Unlock()
	w.pass()
	if e := w.event(); e != "" {
		t.Fatalf("Event once the drain left the node clean: %q", e)
	}
	if got := w.gauge("n1", "pdb-allows-no-disruption"); got != 0 {
		t.Errorf("pdb-allows-no-disruption = %v after the drain, want 0", got)
	}
}

func TestEventsOnChange(t *testing.T) {
	w := newWorld(t, "n1")
	web1, web2 := pod("shop", "web-1", "n1"), pod("shop", "web-2", "n1")
	w.addPod(web1)
	w.addPod(web2)
	w.pass()
	if e := w.event(); e != "" {
		t.Fatalf("Event with nothing blocking: %q", e)
	}

	w.setBudget(budget("shop", "web", 0))
	w.pass()
	want := "Warning DrainBlocked a drain now would be blocked or degraded: pdb-allows-no-disruption: " +
		"shop/web-1 (PodDisruptionBudget web allows 0 disruptions), shop/web-2 (PodDisruptionBudget web allows 0 disruptions)"
	if e := w.event(); e != want {
		t.Fatalf("Event:\n got %q\nwant %q", e, want)
	}
	// The same blockers again (a resync, the budget's status rewritten):
	// no Event.
	w.setBudget(budget("shop", "web", 0))
	w.c.pending.everything()
	w.pass()
	if e := w.event(); e != "" {
		t.Fatalf("Event without a change: %q", e)
	}

	// One more reason, one pod fewer: a new Event.
	bare1 := pod("shop", "bare", "n1", bare)
	w.addPod(bare1)
	w.deletePod(web2)
	w.pass()
	want = "Warning DrainBlocked a drain now would be blocked or degraded: pdb-allows-no-disruption: " +
		"shop/web-1 (PodDisruptionBudget web allows 0 disruptions); no-controller: shop/bare (no controller recreates it)"
	if e := w.event(); e != want {
		t.Fatalf("Event:\n got %q\nwant %q", e, want)
	}

	w.deletePod(bare1)
	w.deleteBudget(budget("shop", "web", 0))
	w.pass()
	if e, want := w.event(), "Normal DrainUnblocked a drain now would be clean: nothing blocks or degrades it"; e != want {
		t.Fatalf("Event %q, want %q", e, want)
	}
	w.c.pending.everything()
	w.pass()
	if e := w.event(); e != "" {
		t.Fatalf("Event without a change: %q", e)
	}
	if got := w.gauge("n1", "pdb-allows-no-disruption"); got != 0 {
		t.Errorf("pdb-allows-no-disruption = %v, want 0", got)
	}
}

// An Event names at most podsPerReason pods per reason and stays short.
func TestMessageBounded(t *testing.T) {
	w := newWorld(t, "n1")
	for i := range 7 {
		w.addPod(pod("shop", fmt.Sprintf("bare-%d", i), "n1", bare))
	}
	for i := range 40 {
		w.addPod(pod("shop", fmt.Sprintf("scratch-with-a-rather-long-name-%02d", i), "n1", emptyDir, grace(3600)))
	}
	w.pass()
	e := w.event()
	if !strings.Contains(e, "no-controller: shop/bare-0 (no controller recreates it), shop/bare-1") ||
		!strings.Contains(e, "shop/bare-4 (no controller recreates it) and 2 more;") || strings.Contains(e, "bare-5") {
		t.Errorf("Event does not name 5 pods and count the rest: %q", e)
	}
	if msg := strings.TrimPrefix(e, "Warning DrainBlocked "); len(msg) > maxMessage {
		t.Errorf("message of %d bytes, want at most %d", len(msg), maxMessage)
	}
	if got := w.gauge("n1", "emptydir"); got != 40 {
		t.Errorf("emptydir = %v, want 40", got)
	}
}

// A budget or Service change evaluates the nodes with pods in its
// namespace, and only them; a pod change only its node.
func TestChangesEvaluateAffectedNodes(t *testing.T) {
	w := newWorld(t, "a", "b", "c")
	w.addPod(pod("shop", "web-1", "a"))
	w.addPod(pod("blog", "web-1", "b"))
	w.c.pending.everything()
	w.pass()
	if got := w.evaluations(); got != 3 {
		t.Fatalf("first pass: %v evaluations, want 3 (every node)", got)
	}
	w.setBudget(budget("shop", "web", 0))
	w.pass()
	if got := w.evaluations(); got != 4 {
		t.Errorf("a budget in shop: %v evaluations in all, want 4 (node a only)", got)
	}
	if w.gauge("a", "pdb-allows-no-disruption") != 1 || w.gauge("b", "pdb-allows-no-disruption") != 0 {
		t.Errorf("the budget of shop blocks a: %v, b: %v; want 1, 0",
			w.gauge("a", "pdb-allows-no-disruption"), w.gauge("b", "pdb-allows-no-disruption"))
	}
	w.addPod(pod("blog", "web-2", "c"))
	w.addPod(pod("blog", "web-3", "c"))
	w.pass()
	if got := w.evaluations(); got != 5 {
		t.Errorf("two pods on c: %v evaluations in all, want 5 (node c once)", got)
	}
	w.pass()
	if got := w.evaluations(); got != 5 {
		t.Errorf("no change: %v evaluations in all, want 5", got)
	}
}

// The series of a node that is gone are deleted.
func TestNodeGoneDeletesSeries(t *testing.T) {
	w := newWorld(t, "a", "b")
	w.addPod(pod("shop", "bare", "b", bare))
	w.c.pending.everything()
	w.pass()
	if n := testutil.CollectAndCount(w.c.metrics.blockers); n != 12 {
		t.Fatalf("%d series, want 12 (6 reasons, 2 nodes)", n)
	}
	w.event() // b's DrainBlocked
	w.removeNode("b", true)
	w.pass()
	if n := testutil.CollectAndCount(w.c.metrics.blockers); n != 6 {
		t.Errorf("%d series after node b went, want 6", n)
	}
	// A node gone without its delete seen goes at the next resync.
	w.removeNode("a", false)
	w.c.pending.everything()
	w.pass()
	if n := testutil.CollectAndCount(w.c.metrics.blockers); n != 0 {
		t.Errorf("%d series after every node went, want 0", n)
	}
	if e := w.event(); e != "" {
		t.Errorf("Event for a node that is gone: %q", e)
	}
}

// Run coalesces a burst of changes into one pass per debounce period,
// passes over every node each resync, never spins, and returns when ctx
// ends.
func TestRunDebounces(t *testing.T) {
	w := newWorld(t, "n1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.c.Run(ctx) }()
	waitFor(t, "the first pass", func() bool { return w.evaluations() == 1 })
	// Idle: only the resync ticker waits on the clock.
	waitFor(t, "Run to idle", func() bool { return w.clock.Waiters() == 1 })

	// A burst within the debounce period: one pass, after it.
	for i := range 50 {
		w.addPod(pod("shop", fmt.Sprintf("web-%d", i), "n1"))
	}
	waitFor(t, "Run to wait out the debounce", func() bool { return w.clock.Waiters() == 2 })
	if got := w.evaluations(); got != 1 {
		t.Fatalf("%v evaluations during the debounce, want 1", got)
	}
	w.clock.Step(DefaultDebounce)
	waitFor(t, "the debounced pass", func() bool { return w.evaluations() == 2 })
	waitFor(t, "Run to idle", func() bool { return w.clock.Waiters() == 1 })

	// A change long after the last pass is evaluated at once.
	w.clock.Step(10 * time.Second)
	w.addPod(pod("shop", "late", "n1"))
	waitFor(t, "an immediate pass", func() bool { return w.evaluations() == 3 })
	waitFor(t, "Run to idle", func() bool { return w.clock.Waiters() == 1 })

	// The resync passes over every node without a change.
	w.clock.Step(DefaultResync - 10*time.Second)
	waitFor(t, "the resync pass", func() bool { return w.evaluations() == 4 })
	waitFor(t, "Run to idle", func() bool { return w.clock.Waiters() == 1 })
	if got := w.evaluations(); got != 4 {
		t.Errorf("%v evaluations, want 4", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
}

// waitFor polls cond, a check of state another goroutine changes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
