package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// The fault tests interrupt a drain that is in progress, held up by a
// PodDisruptionBudget, and check that it still ends right: every pod gone,
// each evicted once, the hold kept throughout and its drain recorded as a
// success.

const spotTaint = "lastcall.io/spot-interruption"

// faultScene is a node to drain, in a pool of two: on it, three "web" pods
// that go at once and one "api" pod behind a budget that allows no
// disruption, so that the drain stays in progress until the test lets the
// budget allow it.
type faultScene struct {
	ns, node, spare string
	api             string // the guarded pod's UID
	// evictable are the UIDs of the pods the drain must evict, each once.
	evictable map[string]string // UID → name
}

// newFaultScene makes the scene; the "api" pod has a grace period of
// apiGrace seconds.
func newFaultScene(t *testing.T, prefix string, apiGrace int64) faultScene {
	t.Helper()
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	s := faultScene{ns: ns, node: newNode(t, prefix, pool), evictable: map[string]string{}}
	// As guardedPod, with the grace period chosen.
	create(t, deployment(ns, "api", 1, pool, apiGrace), env.Client.AppsV1().Deployments(ns).Create)
	create(t, pdb(ns, "api", 1), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	create(t, deployment(ns, "web", 3, pool, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		on := onNode(p, s.node)
		if countReady(on) != 4 {
			return false
		}
		for _, p := range on {
			s.evictable[string(p.UID)] = p.Name
			if p.Labels["app"] == "api" {
				s.api = string(p.UID)
			}
		}
		return true
	})
	eventually(t, "the PDB to be computed", func() bool {
		b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "api", metav1.GetOptions{})
		return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 1 && b.Status.DisruptionsAllowed == 0
	})
	// Added last, so that every pod above landed on the node to drain.
	s.spare = newNode(t, prefix+"-spare", pool)
	return s
}

// spotNotice serves a spot notice from now on, with a 2-minute deadline:
// far enough that the budget is released by the test, never overridden.
func spotNotice(t *testing.T) *aemm.Server {
	t.Helper()
	trigger := aemm.TriggerAfter(0)
	return startAEMM(t, aemm.Config{MockTriggerTime: trigger, SpotTime: trigger.Add(2 * time.Minute),
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"}})
}

// waitBlocked waits until a's drain of the node is in progress and held up
// by the budget: the node held, the free pods gone, the guarded pod's
// eviction refused.
func (s faultScene) waitBlocked(t *testing.T, a *agent) {
	t.Helper()
	waitNode(t, s.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, spotTaint) })
	waitPods(t, s.ns, func(p []*corev1.Pod) bool {
		on := onNode(p, s.node)
		return len(on) == 1 && on[0].Labels["app"] == "api"
	})
	eventually(t, "a drain in progress, its eviction refused", func() bool {
		return a.metric(t, "lastcall_drains_in_progress", nil) == 1 &&
			a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"}) >= 1
	})
	// Events are posted in the background: the free pods' are out before
	// any fault.
	s.evictedEvents(t, len(s.evictable)-1)
}

// heldHold returns the node's one hold, failing unless the node is held
// (cordoned, tainted) and that hold's drain has not ended.
func (s faultScene) heldHold(t *testing.T) node.Hold {
	t.Helper()
	n, err := env.Client.CoreV1().Nodes().Get(context.Background(), s.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := node.StateOf(n)
	if err != nil || len(st.Holds) != 1 || !n.Spec.Unschedulable || !hasTaint(n, spotTaint) {
		t.Fatalf("node not held: unschedulable %v, taints %v, state %+v (%v)", n.Spec.Unschedulable, n.Spec.Taints, st, err)
	}
	if h := st.Holds[0]; h.Drain != "" {
		t.Fatalf("drain result %q recorded while the drain was still to finish", h.Drain)
	}
	return st.Holds[0]
}

// releaseByScaling lets the guarded pod go as its owner would: a second
// replica is scheduled on the spare node, and once it is Ready the budget
// allows the eviction. It returns the hold once its drain is recorded.
func (s faultScene) releaseByScaling(t *testing.T) node.Hold {
	t.Helper()
	scaleTo(t, s.ns, "api", 2)
	return s.drained(t)
}

// drained waits until no pod is left on the node and the drain is recorded
// as a success on the hold, which is kept, and returns the hold.
func (s faultScene) drained(t *testing.T) node.Hold {
	t.Helper()
	waitPods(t, s.ns, func(p []*corev1.Pod) bool { return len(onNode(p, s.node)) == 0 })
	var hold node.Hold
	waitNode(t, s.node, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		if len(st.Holds) == 1 && st.Holds[0].Drain != "" && n.Spec.Unschedulable && hasTaint(n, spotTaint) {
			hold = st.Holds[0]
			return true
		}
		return false
	})
	if hold.Drain != "success" {
		t.Fatalf("drain result %q, want success", hold.Drain)
	}
	return hold
}

// evictedEvents waits until n pods have lastcall's Evicted Events, and
// returns how many each has, by pod UID.
func (s faultScene) evictedEvents(t *testing.T, n int) map[string]int32 {
	t.Helper()
	count := map[string]int32{}
	eventually(t, fmt.Sprintf("Evicted Events for %d pods", n), func() bool {
		list, err := env.Client.CoreV1().Events(s.ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("reason", "Evicted").String(),
		})
		if err != nil {
			return false
		}
		clear(count)
		for _, e := range list.Items {
			if e.Source.Component == "lastcall" {
				count[string(e.InvolvedObject.UID)] += max(e.Count, 1)
			}
		}
		return len(count) >= n
	})
	return count
}

// checkEvictedOnce checks that every evictable pod got exactly one Evicted
// Event, and no other pod any; the pods of mayLack (UIDs) may have none.
func (s faultScene) checkEvictedOnce(t *testing.T, mayLack ...string) {
	t.Helper()
	count := s.evictedEvents(t, len(s.evictable)-len(mayLack))
	for uid, name := range s.evictable {
		switch n := count[uid]; {
		case n == 0 && slices.Contains(mayLack, uid):
			t.Logf("pod %s has no Evicted Event", name)
		case n != 1:
			t.Errorf("pod %s (UID %s) evicted %d times, want once", name, uid, n)
		}
	}
	for uid, n := range count {
		if _, ok := s.evictable[uid]; !ok {
			t.Errorf("pod UID %s, not one of the node's, was evicted %d times", uid, n)
		}
	}
}

// nodeEventCount is how many times lastcall recorded reason on the node.
func nodeEventCount(t *testing.T, name, reason string) int32 {
	t.Helper()
	var n int32
	for _, e := range waitEvents(t, "default", name, reason) {
		if e.Reason == reason && e.Source.Component == "lastcall" {
			n += max(e.Count, 1)
		}
	}
	return n
}

// watchLapses watches the node from now on, and returns a func that stops
// the watch and lists each moment, after the node was first held, it was
// seen not held: uncordoned, untainted or without lastcall's hold. Pods
// could be scheduled on the node then.
func watchLapses(t *testing.T, name string) func() []string {
	t.Helper()
	held := false
	return recordNode(t, name, func(n *corev1.Node) string {
		st, _ := node.StateOf(n)
		now := n.Spec.Unschedulable && hasTaint(n, spotTaint) && len(st.Holds) == 1
		defer func() { held = held || now }()
		if held && !now {
			return fmt.Sprintf("resourceVersion %s: unschedulable %v, taints %v, holds %+v",
				n.ResourceVersion, n.Spec.Unschedulable, n.Spec.Taints, st.Holds)
		}
		return ""
	})
}

// recordNode watches the node from now on, and returns a func that stops
// the watch and lists what note said of each version of the node it saw
// ("" says nothing). note runs on the watch's goroutine, one version after
// the other.
func recordNode(t *testing.T, name string, note func(*corev1.Node) string) func() []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := env.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notes []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok {
				if s := note(n); s != "" {
					mu.Lock()
					notes = append(notes, s)
					mu.Unlock()
				}
			}
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); w.Stop(); <-done }) }
	t.Cleanup(stop)
	return func() []string {
		stop()
		mu.Lock()
		defer mu.Unlock()
		return notes
	}
}

// startAgentProcess runs the agent binary bin for node in a process of its
// own, reading the metadata service at imdsURL. The returned agent scrapes
// it. The process is killed when the test ends, and its log shown if the
// test failed.
func startAgentProcess(t *testing.T, bin, name, imdsURL, label string) (*agentproc.Agent, *agent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	p, err := agentproc.Start(ctx, agentproc.Config{
		Binary: bin, Node: name, Kubeconfig: env.Kubeconfig, IMDS: imdsURL,
		LogPath: filepath.Join(t.TempDir(), label+".log"),
		Env:     []string{"LASTCALL_CLOUD=aws", "LASTCALL_POLL_INTERVAL=100ms", "LASTCALL_IMDS_SIGNALS=spot", "LASTCALL_LOG_LEVEL=debug"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(p.LogPath); err == nil {
				t.Logf("log of %s:\n%s", label, b)
			}
		}
	})
	return p, &agent{url: "http://" + p.Addr}
}

// resume runs a second agent process for the scene's node once the first
// has been stopped while holding it (since before), lets the budget allow
// the drain, and checks that the drain finished as one: the hold kept
// from before (and never lapsed, as lapses watched), every pod evicted
// once, one DrainCompleted Event. It returns the second agent.
func (s faultScene) resume(t *testing.T, bin, imdsURL string, before node.Hold, lapses func() []string) *agent {
	t.Helper()
	_, a2 := startAgentProcess(t, bin, s.node, imdsURL, "second")
	s.waitBlocked(t, a2)
	after := s.releaseByScaling(t)

	if !after.Since.Equal(before.Since) {
		t.Errorf("the hold was taken again (since %s, then %s)", before.Since, after.Since)
	}
	if l := lapses(); len(l) > 0 {
		t.Errorf("the node was released during the drain, %d times: %v", len(l), l)
	}
	s.checkEvictedOnce(t)
	if n := nodeEventCount(t, s.node, "DrainCompleted"); n != 1 {
		t.Errorf("%d DrainCompleted Events, want 1", n)
	}
	return a2
}

// A process killed (SIGKILL) in the middle of a drain leaves its hold; the
// next process reads the same notice, finds its own hold, keeps it, and
// finishes the drain without evicting anything a second time.
func TestFaultAgentKilledMidDrain(t *testing.T) {
	bin := buildLastcall(t)
	s := newFaultScene(t, "fault-kill", 30)
	imds := spotNotice(t)
	lapses := watchLapses(t, s.node)

	first, a1 := startAgentProcess(t, bin, s.node, imds.URL(), "first")
	s.waitBlocked(t, a1)
	first.Kill()
	before := s.heldHold(t)

	a2 := s.resume(t, bin, imds.URL(), before, lapses)
	a2.checkMetrics(t, []metricWant{
		{"lastcall_actions_total", map[string]string{"action": "cordon", "result": "success"}, 0}, // already held
		{"lastcall_actions_total", map[string]string{"action": "uncordon"}, 0},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 1}, // the guarded pod only
	})
	if n := nodeEventCount(t, s.node, "Cordoned"); n != 1 {
		t.Errorf("%d Cordoned Events, want 1", n)
	}
}

// SIGTERM in the middle of a drain: the process stops the drain and exits
// 0 promptly, leaving the node held with no drain result; the next process
// resumes the drain and finishes it.
func TestFaultAgentTerminatedMidDrain(t *testing.T) {
	const exitBound = 10 * time.Second
	bin := buildLastcall(t)
	s := newFaultScene(t, "fault-term", 30)
	imds := spotNotice(t)
	lapses := watchLapses(t, s.node)

	first, a1 := startAgentProcess(t, bin, s.node, imds.URL(), "first")
	s.waitBlocked(t, a1)
	start := time.Now()
	if err := first.Stop(); err != nil { // SIGTERM, then SIGKILL after exitBound
		t.Fatalf("after SIGTERM: %v (exit status 0 within %s wanted)", err, exitBound)
	}
	took := time.Since(start)
	t.Logf("exited %s after SIGTERM", took.Round(time.Millisecond))
	if took >= exitBound {
		t.Errorf("took %s to exit after SIGTERM, want under %s", took, exitBound)
	}
	before := s.heldHold(t)

	a2 := s.resume(t, bin, imds.URL(), before, lapses)
	if got := a2.metric(t, "lastcall_actions_total", map[string]string{"action": "cordon", "result": "success"}); got != 0 {
		t.Errorf("second process cordoned a held node (%v)", got)
	}
}

// kube-apiserver restarts while a drain is blocked: the drain keeps
// retrying through the outage, its informers re-list, and it finishes once
// the budget allows; the agent stays healthy.
//
// After a restart of kube-apiserver, kube-controller-manager sometimes
// takes a minute or more to act again, so the budget is released by
// deleting it, and the guarded pod has no grace period (it goes without
// kwok): the drain's end depends on kube-apiserver and lastcall only.
func TestFaultAgentAPIServerRestartMidDrain(t *testing.T) {
	s := newFaultScene(t, "fault-apisrv", 0)
	imds := spotNotice(t)
	a := startAgent(t, s.node, imds.URL(), "--imds-signals=spot")
	s.waitBlocked(t, a)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := env.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	t.Logf("kube-apiserver restarted in %s", restarted.Sub(start).Round(time.Millisecond))
	// The eviction is retried against the new server and refused again:
	// the drain outlived the outage.
	refused := a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"})
	eventually(t, "the eviction retried after the restart", func() bool {
		return a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"}) > refused
	})
	s.heldHold(t)

	if err := env.Client.PolicyV1().PodDisruptionBudgets(s.ns).Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.drained(t)
	t.Logf("drained %s after the restart", time.Since(restarted).Round(time.Millisecond))
	// A pod with no grace period is gone as its eviction is accepted: the
	// drain may see it gone, and stop, before the eviction's answer is
	// read, and then records no Evicted Event for it.
	s.checkEvictedOnce(t, s.api)
	t.Logf("evictions that failed during the outage: %v", a.metric(t, "lastcall_evictions_total", map[string]string{"code": "error"}))
	if got := a.metric(t, "lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}); got != 1 {
		t.Errorf("drain success = %v, want 1", got)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := a.probe(t, p); code != http.StatusOK {
			t.Errorf("%s = %d after the restart", p, code)
		}
	}

	// The tests that follow need the controllers: wait until they act
	// again (the evicted pod's replacement runs on the spare node).
	recovered := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		pods, err := env.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
		if err == nil && countReady(onNode(podPtrs(pods.Items), s.spare)) == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the controllers had not recovered %s after kube-apiserver restarted", time.Since(restarted).Round(time.Second))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("controllers acting again %s after the restart (%s after the drain)",
		time.Since(restarted).Round(time.Millisecond), time.Since(recovered).Round(time.Millisecond))
}

func podPtrs(pods []corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(pods))
	for i := range pods {
		out[i] = &pods[i]
	}
	return out
}

// faultMode is what a faultyIMDS does with each request.
type faultMode int32

const (
	faultPass faultMode = iota // to the upstream
	faultFail                  // 500 at once
	faultHang                  // hold the request until the client gives up
)

// faultyIMDS stands between the agent and the metadata service, and passes
// requests through, fails them, or hangs them.
type faultyIMDS struct {
	url  string
	mode atomic.Int32
	hung atomic.Int64 // requests held so far
}

func newFaultyIMDS(t *testing.T, upstream string) *faultyIMDS {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	f := &faultyIMDS{}
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch faultMode(f.mode.Load()) {
		case faultFail:
			http.Error(w, "injected fault", http.StatusInternalServerError)
		case faultHang:
			f.hung.Add(1)
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	f.url = srv.URL
	return f
}

func (f *faultyIMDS) set(m faultMode) { f.mode.Store(int32(m)) }

// The metadata service fails, then hangs, then recovers with a spot notice
// waiting: the agent counts each failure by reason, is not ready while its
// sources are stale (its liveness never fails), never acts on a failed
// read, and once the service answers again holds and drains the node
// promptly.
func TestFaultAgentMetadataFlapping(t *testing.T) {
	// A read times out after max(poll interval, 1 s) (interruption.Poller's
	// default; imds.Options has no timeout of its own), and failed reads
	// back off up to 10 s: recovery is seen within both plus some slack.
	const recoveryBound = 15 * time.Second
	sources := []string{"imds-spot", "imds-rebalance"}
	ns := newNamespace(t)
	name := newNode(t, "fault-imds", nil)
	create(t, deployment(ns, "web", 2, map[string]string{"kubernetes.io/hostname": name}, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })
	imds := spotNotice(t)
	f := newFaultyIMDS(t, imds.URL())
	f.set(faultFail)
	a := startAgent(t, name, f.url, "--source-stale-after=1s", "--imds-signals=spot,rebalance")
	errorsOf := func(source, reason string) float64 {
		return a.metric(t, "lastcall_source_errors_total", map[string]string{"source": source, "reason": reason})
	}

	// Errors.
	eventually(t, "HTTP errors counted", func() bool {
		return errorsOf(sources[0], "http_error") >= 2 && errorsOf(sources[1], "http_error") >= 2
	})
	eventually(t, "/readyz to fail while the sources are stale", func() bool { return a.probe(t, "/readyz") == http.StatusServiceUnavailable })

	// Timeouts.
	f.set(faultHang)
	eventually(t, "timeouts counted", func() bool {
		return errorsOf(sources[0], "timeout") >= 1 && errorsOf(sources[1], "timeout") >= 1
	})
	if code := a.probe(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while every read times out", code)
	}
	for _, src := range sources {
		if up := a.metric(t, "lastcall_source_up", map[string]string{"source": src}); up != 0 {
			t.Errorf("%s: source_up = %v while failing", src, up)
		}
	}
	if n := waitNode(t, name, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable || n.Annotations[node.AnnotationState] != "" {
		t.Fatalf("node changed before any notice was read: unschedulable %v, state %q", n.Spec.Unschedulable, n.Annotations[node.AnnotationState])
	}
	if code := a.probe(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d: liveness is the agent's own loop, not the metadata service", code)
	}

	// Recovery.
	recovered := time.Now()
	f.set(faultPass)
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, spotTaint) })
	took := time.Since(recovered)
	t.Logf("held %s after the service recovered (%d requests hung, errors: %v http, %v timeout on %s)", took.Round(time.Millisecond),
		f.hung.Load(), errorsOf(sources[0], "http_error"), errorsOf(sources[0], "timeout"), sources[0])
	if took > recoveryBound {
		t.Errorf("held %s after the service recovered, want within %s", took, recoveryBound)
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	eventually(t, "/readyz to pass again", func() bool { return a.probe(t, "/readyz") == http.StatusOK })
	a.checkMetrics(t, []metricWant{
		{"lastcall_events_received_total", map[string]string{"source": "imds-spot", "kind": "spot-interruption"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "cordon", "result": "success"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 2},
		{"lastcall_source_up", map[string]string{"source": "imds-spot"}, 1},
		{"lastcall_source_up", map[string]string{"source": "imds-rebalance"}, 1},
	})
}
