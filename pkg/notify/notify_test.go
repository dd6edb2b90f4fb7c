package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
)

// hangUp, as a receiver status, closes the connection without answering.
const hangUp = -1

// receiver is a webhook: it answers the given statuses in turn (then 200)
// and hands every request's body to the test.
type receiver struct {
	*httptest.Server
	statuses []int
	n        atomic.Int32
	posts    chan post
}

type post struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	t.Helper()
	r := &receiver{statuses: statuses, posts: make(chan post, 128)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		i := int(r.n.Add(1)) - 1
		body, _ := io.ReadAll(req.Body)
		if req.Method != http.MethodPost {
			t.Errorf("method %s, want POST", req.Method)
		}
		r.posts <- post{header: req.Header, body: body}
		status := http.StatusOK
		if i < len(r.statuses) {
			status = r.statuses[i]
		}
		switch status {
		case hangUp:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case http.StatusTooManyRequests:
			w.Header().Set("Retry-After", "0")
			http.Error(w, "rate limited", status)
		case http.StatusMovedPermanently:
			http.Redirect(w, req, "/elsewhere", status)
		default:
			w.WriteHeader(status)
			io.WriteString(w, strings.Repeat("no such hook. ", 40))
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// next returns the next request the receiver got.
func (r *receiver) next(t *testing.T) post {
	t.Helper()
	select {
	case p := <-r.posts:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a POST")
		return post{}
	}
}

// text is the Slack message's text of p, checking that p is one.
func (p post) text(t *testing.T) string {
	t.Helper()
	if ct := p.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var msg map[string]any
	if err := json.Unmarshal(p.body, &msg); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, p.body)
	}
	text, ok := msg["text"].(string)
	if !ok || len(msg) != 1 {
		t.Fatalf("body is not a Slack message {\"text\": ...}: %s", p.body)
	}
	return text
}

// newNotifier returns a Notifier for o with fast retries; run starts it.
func newNotifier(t *testing.T, o Options, clk clock.Clock) *Notifier {
	t.Helper()
	n, err := New(o, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})), clk)
	if err != nil {
		t.Fatal(err)
	}
	n.backoff = time.Millisecond
	return n
}

// run runs n until the test ends.
func run(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func count(n *Notifier, p Phase, result string) float64 {
	return testutil.ToFloat64(n.metrics.notifications.WithLabelValues(string(p), result))
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeTemplate(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hook.tmpl")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

var at = time.Date(2026, 3, 4, 12, 32, 58, 0, time.UTC)

func TestDefaultTemplateIsSlackMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Notification
		want []string
	}{
		{"received with deadline and awkward detail", Notification{Phase: PhaseReceived, Node: "ip-10-0-0-1", Instance: "i-0abc", Kind: "spot-interruption",
			Action: "drain", Detail: "say \"bye\"\n\tnow \\ <soon> & {x}", Deadline: at.Add(118 * time.Second), Time: at},
			[]string{":warning: spot-interruption on node ip-10-0-0-1 (i-0abc): drain started, deadline 12:34:56Z (in 1m58s)", "say \"bye\"\n\tnow \\ <soon> & {x}"}},
		{"received cordon, no deadline, in a cluster", Notification{Phase: PhaseReceived, Node: "n1", Kind: "rebalance-recommendation", Action: "cordon", Cluster: "prod"},
			[]string{":warning: rebalance-recommendation on node n1 in cluster prod: cordoned"}},
		{"received after its deadline", Notification{Phase: PhaseReceived, Node: "n1", Kind: "asg-termination", Action: "drain", Deadline: at, Time: at.Add(time.Second)},
			[]string{"deadline 12:32:58Z (passed)"}},
		{"finished", Notification{Phase: PhaseFinished, Node: "ip-10-0-0-1", Instance: "i-0abc", Result: "success", Evicted: 14, Took: 1234 * time.Millisecond},
			[]string{":white_check_mark: node ip-10-0-0-1 (i-0abc) drained in 1.2s: 14 pods evicted"}},
		{"finished with one pod", Notification{Phase: PhaseFinished, Node: "n1", Result: "success", Evicted: 1, Took: 80 * time.Second},
			[]string{"drained in 1m20s: 1 pod evicted"}},
		{"timed out", Notification{Phase: PhaseFinished, Node: "ip-10-0-0-1", Result: "timeout", Remaining: 3},
			[]string{":x: drain of node ip-10-0-0-1 ended (timeout) with 3 pods left"}},
		{"dry run", Notification{Phase: PhaseFinished, Node: "n1", Kind: "preemption", Result: "dry_run"},
			[]string{"dry run: node n1 would have been drained for preemption"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t)
			n := newNotifier(t, Options{URL: r.URL + "/services/T0/B0/x"}, clock.RealClock{})
			run(t, n)
			n.Notify(tc.m)
			text := r.next(t).text(t)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("text %q does not contain %q", text, w)
				}
			}
		})
	}
}

func TestCustomTemplateFile(t *testing.T) {
	r := newReceiver(t)
	f := writeTemplate(t, `{"phase": "${phase}", "node": "${node}", "cluster": "${cluster}", "mode": "${mode}",
 "detail": "${detail}", "deadline": "${deadline}", "took": "${took_seconds}s"}`)
	n := newNotifier(t, Options{URL: r.URL, TemplateFile: f, Cluster: "prod", Headers: map[string]string{"Authorization": "Bearer t0k"}}, clock.RealClock{})
	run(t, n)
	n.Notify(Notification{Phase: PhaseFinished, Node: "n1", Mode: "queue", Detail: `"quoted"`, Deadline: at, Took: 1500 * time.Millisecond})
	p := r.next(t)
	var got map[string]any
	if err := json.Unmarshal(p.body, &got); err != nil {
		t.Fatalf("%v: %s", err, p.body)
	}
	want := map[string]any{"phase": "finished", "node": "n1", "cluster": "prod", "mode": "queue", "detail": `"quoted"`,
		"deadline": "2026-03-04T12:32:58Z", "took": "1.5s"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (body %s)", k, got[k], v, p.body)
		}
	}
	if a := p.header.Get("Authorization"); a != "Bearer t0k" {
		t.Errorf("Authorization %q", a)
	}
	if ua := p.header.Get("User-Agent"); !strings.HasPrefix(ua, "lastcall/") {
		t.Errorf("User-Agent %q", ua)
	}
}

// One notification per key and phase: repeats are counted, not sent,
// until Forget or the window's end.
func TestDedupe(t *testing.T) {
	r := newReceiver(t)
	f := writeTemplate(t, `{"key": "${key}", "phase": "${phase}", "kind": "${kind}"}`)
	clk := testingclock.NewFakeClock(at)
	n := newNotifier(t, Options{URL: r.URL, TemplateFile: f, DedupeWindow: time.Hour}, clk)
	run(t, n)
	expect := func(key string, phase Phase, kind string) {
		t.Helper()
		p := r.next(t)
		var got struct{ Key, Phase, Kind string }
		if err := json.Unmarshal(p.body, &got); err != nil {
			t.Fatal(err)
		}
		if got.Key != key || got.Phase != string(phase) || got.Kind != kind {
			t.Fatalf("POST %s, want key %s phase %s kind %s", p.body, key, phase, kind)
		}
	}
	spot := Notification{Phase: PhaseReceived, Node: "ip-1", Instance: "i-1", Kind: "spot-interruption"}
	rebalance := Notification{Phase: PhaseReceived, Node: "ip-1", Instance: "i-1", Kind: "rebalance-recommendation"}
	finished := Notification{Phase: PhaseFinished, Node: "ip-1", Instance: "i-1", Kind: "spot-interruption", Result: "success"}
	barrier := func(kind string) { // delivered in order: what came before it was sent or not
		t.Helper()
		n.Notify(Notification{Phase: PhaseFinished, Node: "barrier-" + kind, Kind: kind})
		expect("barrier-"+kind, PhaseFinished, kind)
	}

	n.Notify(spot)
	n.Notify(rebalance) // same instance and phase
	n.Notify(finished)
	n.Notify(finished)
	expect("i-1", PhaseReceived, "spot-interruption")
	expect("i-1", PhaseFinished, "spot-interruption")
	barrier("1")

	// A node without instance is its own key.
	n.Notify(Notification{Phase: PhaseReceived, Node: "ip-1", Kind: "node-only"})
	expect("ip-1", PhaseReceived, "node-only")

	// After Forget, a new interruption of the same instance is told.
	n.Forget("i-1")
	n.Notify(rebalance)
	expect("i-1", PhaseReceived, "rebalance-recommendation")

	// Within the window, still a repeat; after it, told again.
	clk.Step(59 * time.Minute)
	n.Notify(spot)
	barrier("2")
	clk.Step(time.Minute)
	n.Notify(spot)
	expect("i-1", PhaseReceived, "spot-interruption")
	barrier("3")
	waitFor(t, "the last barrier counted", func() bool { return count(n, PhaseFinished, resultSent) == 4 })

	for _, c := range []struct {
		phase  Phase
		result string
		want   float64
	}{
		{PhaseReceived, resultSent, 4}, {PhaseReceived, resultDeduplicated, 2},
		{PhaseFinished, resultSent, 4}, {PhaseFinished, resultDeduplicated, 1},
		{PhaseReceived, resultDropped, 0}, {PhaseFinished, resultFailed, 0},
	} {
		if got := count(n, c.phase, c.result); got != c.want {
			t.Errorf("notifications_total{phase=%s,result=%s} = %v, want %v", c.phase, c.result, got, c.want)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.seen) != 3 { // the sweep at the window's end took those of the first hour
		t.Errorf("%d keys remembered, want 3", len(n.seen))
	}
	clk.Step(2 * time.Hour)
	n.pruneLocked(clk.Now())
	if len(n.seen) != 0 {
		t.Errorf("%d keys remembered after the window, want 0", len(n.seen))
	}
}

// Network errors, 429 and 5xx are retried, up to 3 attempts; other
// answers are not.
func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []int
		posts    int32
		result   string
	}{
		{"500 then success", []int{500}, 2, resultSent},
		{"429 then success", []int{429}, 2, resultSent},
		{"connection closed then success", []int{hangUp}, 2, resultSent},
		{"5xx every time", []int{500, 502, 503}, 3, resultFailed},
		{"400 is not retried", []int{400}, 1, resultFailed},
		{"404 is not retried", []int{404}, 1, resultFailed},
		{"a redirect is not followed", []int{301}, 1, resultFailed},
		{"204 is success", []int{204}, 1, resultSent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t, tc.statuses...)
			n := newNotifier(t, Options{URL: r.URL}, clock.RealClock{})
			run(t, n)
			n.Notify(Notification{Phase: PhaseFinished, Node: "n1", Result: "success"})
			waitFor(t, "the delivery to end", func() bool {
				return count(n, PhaseFinished, resultSent)+count(n, PhaseFinished, resultFailed) == 1
			})
			if got := r.n.Load(); got != tc.posts {
				t.Errorf("%d POSTs, want %d", got, tc.posts)
			}
			if got := count(n, PhaseFinished, tc.result); got != 1 {
				t.Errorf("notifications_total{result=%s} = %v, want 1", tc.result, got)
			}
			if got := testutil.CollectAndCount(n.metrics.duration); got != 2 {
				t.Errorf("%d duration series, want 2", got)
			}
		})
	}
}

// Notify never blocks: past QueueSize waiting notifications, it drops.
func TestQueueFullDrops(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, Options{URL: r.URL}, clock.RealClock{})
	for i := range QueueSize + 2 {
		n.Notify(Notification{Phase: PhaseReceived, Node: fmt.Sprintf("n%d", i)})
	}
	n.Notify(Notification{Phase: PhaseReceived, Node: "n0"}) // queued already: a repeat, not a drop
	if got := count(n, PhaseReceived, resultDropped); got != 2 {
		t.Errorf("dropped = %v, want 2", got)
	}
	if got := count(n, PhaseReceived, resultDeduplicated); got != 1 {
		t.Errorf("deduplicated = %v, want 1", got)
	}
	// A dropped notification was never sent: its repeat is not a repeat.
	run(t, n)
	waitFor(t, "the queue delivered", func() bool { return count(n, PhaseReceived, resultSent) == QueueSize })
	n.Notify(Notification{Phase: PhaseReceived, Node: fmt.Sprintf("n%d", QueueSize)})
	waitFor(t, "the dropped one sent", func() bool { return count(n, PhaseReceived, resultSent) == QueueSize+1 })
	if got := r.n.Load(); got != QueueSize+1 {
		t.Errorf("%d POSTs, want %d", got, QueueSize+1)
	}
}

// A body that cannot be rendered is counted as failed and not sent.
func TestFailedRenderIsFailed(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, Options{URL: r.URL}, clock.RealClock{})
	n.render = func(m Notification) ([]byte, error) {
		if m.Node == "bad" {
			return []byte(`{"broken": `), errNotJSON
		}
		return []byte(`{"node": "` + m.Node + `"}`), nil
	}
	run(t, n)
	n.Notify(Notification{Phase: PhaseReceived, Node: "bad"})
	n.Notify(Notification{Phase: PhaseReceived, Node: "good"})
	if p := r.next(t); string(p.body) != `{"node": "good"}` {
		t.Errorf("first POST %s, want the good one", p.body)
	}
	if got := count(n, PhaseReceived, resultFailed); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"not http", Options{URL: "ftp://hooks.example/x"}, `webhook URL: must be an absolute http or https URL; got scheme "ftp"`},
		{"relative", Options{URL: "hooks.example/services/secret"}, `got scheme ""`},
		{"no host", Options{URL: "https:///services/x"}, "got no host"},
		{"unparsable", Options{URL: "://hooks.example/secret"}, "webhook URL: not a valid URL: missing protocol scheme"},
		{"unknown format", Options{Format: "discord"}, `webhook format: must be slack, teams or json; got "discord"`},
		{"missing template", Options{TemplateFile: "/no/such/hook.tmpl"}, "webhook template: open /no/such/hook.tmpl: no such file or directory"},
		{"template is not JSON", Options{TemplateFile: writeTemplate(t, "{\"text\": \"${node}\",\n}")}, "webhook template: hook.tmpl: line 2, column 1: not valid JSON"},
		{"template with an unknown field", Options{TemplateFile: writeTemplate(t, `{"text": "${pod}"}`)}, "unknown placeholder ${pod}; the fields are phase, node,"},
		{"a Go template", Options{TemplateFile: writeTemplate(t, `{"text": {{json .Node}}}`)}, "Go templates are no longer taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			_, err := New(tc.o, reg, slog.New(slog.DiscardHandler), clock.RealClock{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error repeats the URL: %v", err)
			}
		})
	}
}

// Without a URL the Notifier does nothing, and its metrics exist at 0.
func TestDisabled(t *testing.T) {
	reg := prometheus.NewRegistry()
	n, err := New(Options{}, reg, slog.New(slog.DiscardHandler), clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(Notification{Phase: PhaseReceived, Node: "n1"})
	n.Forget("n1")
	if got, err := testutil.GatherAndCount(reg, "lastcall_notifications_total"); err != nil || got != 8 {
		t.Errorf("%d series (%v), want 8", got, err)
	}
	want := `
# HELP lastcall_notifications_total ` + helpOf(t, reg, "lastcall_notifications_total") + `
# TYPE lastcall_notifications_total counter
lastcall_notifications_total{phase="finished",result="deduplicated"} 0
lastcall_notifications_total{phase="finished",result="dropped"} 0
lastcall_notifications_total{phase="finished",result="failed"} 0
lastcall_notifications_total{phase="finished",result="sent"} 0
lastcall_notifications_total{phase="received",result="deduplicated"} 0
lastcall_notifications_total{phase="received",result="dropped"} 0
lastcall_notifications_total{phase="received",result="failed"} 0
lastcall_notifications_total{phase="received",result="sent"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lastcall_notifications_total"); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Run(ctx); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func helpOf(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

// When Run's ctx ends, what is queued is still delivered.
func TestShutdownFlushes(t *testing.T) {
	r := newReceiver(t)
	n := newNotifier(t, Options{URL: r.URL}, clock.RealClock{})
	n.Notify(Notification{Phase: PhaseReceived, Node: "n1"})
	n.Notify(Notification{Phase: PhaseFinished, Node: "n1", Result: "success"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.n.Load(); got != 2 {
		t.Errorf("%d POSTs after shutdown, want 2", got)
	}
	if count(n, PhaseReceived, resultSent) != 1 || count(n, PhaseFinished, resultSent) != 1 {
		t.Error("sent metrics not counted")
	}
}

// The flush is bounded: a webhook that does not answer cannot hold up
// shutdown beyond the flush time.
func TestShutdownIsBounded(t *testing.T) {
	inflight, release := make(chan struct{}, 4), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so that the server notices the client going
		inflight <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	n := newNotifier(t, Options{URL: srv.URL, Timeout: time.Minute}, clock.RealClock{})
	n.flush = 50 * time.Millisecond
	n.Notify(Notification{Phase: PhaseReceived, Node: "n1"})
	n.Notify(Notification{Phase: PhaseReceived, Node: "n2"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	select {
	case <-inflight:
	case <-time.After(10 * time.Second):
		t.Fatal("no request came")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the flush time")
	}
	if f, d := count(n, PhaseReceived, resultFailed), count(n, PhaseReceived, resultDropped); f != 1 || d != 1 {
		t.Errorf("failed %v, dropped %v; want 1 and 1", f, d)
	}
}
