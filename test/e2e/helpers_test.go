package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

const waitTimeout = 60 * time.Second

// agent is a lastcall node agent running in this process.
type agent struct {
	url  string
	stop func()
}

// startAgent runs the node agent for node against the metadata service at
// imdsURL, until the test ends; args are further flags, which win.
func startAgent(t *testing.T, node, imdsURL string, args ...string) *agent {
	t.Helper()
	base := []string{"--node-name=" + node, "--imds-endpoint=" + imdsURL, "--poll-interval=100ms",
		"--cloud=aws", // as configured; the GCE and Azure tests detect
		"--log-format=text"}
	return runApp(t, options(t, append(base, args...)...), "node", node)
}

// options parses a command line as main does, without the environment.
func options(t *testing.T, args ...string) *app.Options {
	t.Helper()
	o, err := app.Parse(args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatalf("options %q: %v", args, err)
	}
	return o
}

// runApp runs lastcall with o in this process until the test ends; logs
// go to the test's output, tagged key=name.
func runApp(t *testing.T, o *app.Options, key, name string) *agent {
	t.Helper()
	return runAppWith(t, o, env.Config, true, key, name)
}

// runAppWith is runApp with the client configuration cfg. When strict, an
// error lastcall returns fails the test; otherwise it is logged.
func runAppWith(t *testing.T, o *app.Options, cfg *rest.Config, strict bool, key, name string) *agent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With(key, name)
	go func() { done <- app.Run(ctx, o, app.Env{Client: client, Listener: ln, Log: log}) }()
	var once sync.Once
	a := &agent{url: "http://" + ln.Addr().String(), stop: func() {
		once.Do(func() {
			cancel()
			switch err := <-done; {
			case err == nil:
			case strict:
				t.Errorf("lastcall (%s=%s) returned %v", key, name, err)
			case !errors.Is(err, context.Canceled):
				t.Logf("lastcall (%s=%s) returned %v", key, name, err)
			}
		})
	}}
	t.Cleanup(a.stop)
	return a
}

// startAEMM runs amazon-ec2-metadata-mock until the test ends.
func startAEMM(t *testing.T, cfg aemm.Config) *aemm.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := aemm.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting amazon-ec2-metadata-mock: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// quietAEMM is AEMM configured with no notice at all: the starting point
// that scenarios change one signal of.
func quietAEMM() aemm.Config {
	return aemm.Config{
		MockDelay:           aemm.Never,
		RebalanceDelay:      aemm.Never,
		ASGTerminationDelay: aemm.Never,
	}
}

// metrics scrapes the agent.
func (a *agent) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(a.url + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	return mfs
}

// metric returns the value of the series of name whose labels include
// labels (summed over the other labels); histograms give their count.
func (a *agent) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mf, ok := a.metrics(t)[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range mf.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// metricWant is a value the agent's /metrics should show.
type metricWant struct {
	name   string
	labels map[string]string
	want   float64
}

// checkMetrics reports each metric whose value is not what is wanted.
func (a *agent) checkMetrics(t *testing.T, wants []metricWant) {
	t.Helper()
	for _, m := range wants {
		if got := a.metric(t, m.name, m.labels); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.Label {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// eventually polls cond (a local check, such as a scrape) until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *agent) probe(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(a.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitNode watches node until cond holds and returns it.
func waitNode(t *testing.T, name string, cond func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	lw := cache.NewListWatchFromClient(env.Client.CoreV1().RESTClient(), "nodes", "", fields.OneTermEqualSelector("metadata.name", name))
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.Node{}, nil, func(e watch.Event) (bool, error) {
		n, ok := e.Object.(*corev1.Node)
		return ok && cond(n), nil
	})
	if err != nil {
		t.Fatalf("waiting for node %s: %v", name, err)
	}
	return ev.Object.(*corev1.Node)
}

// waitPods watches the pods of ns until cond holds for the current set.
func waitPods(t *testing.T, ns string, cond func([]*corev1.Pod) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	lw := cache.NewListWatchFromClient(env.Client.CoreV1().RESTClient(), "pods", ns, fields.Everything())
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	check := func(watch.Event) (bool, error) {
		var pods []*corev1.Pod
		for _, o := range store.List() {
			pods = append(pods, o.(*corev1.Pod))
		}
		return cond(pods), nil
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, func(s cache.Store) (bool, error) {
		store = s
		return check(watch.Event{})
	}, check)
	if err != nil {
		t.Fatalf("waiting for pods in %s: %v", ns, err)
	}
}

// waitEvents waits until the object named name has Events with every reason.
func waitEvents(t *testing.T, ns, name string, reasons ...string) []corev1.Event {
	t.Helper()
	var got []corev1.Event
	eventually(t, fmt.Sprintf("events %v on %s", reasons, name), func() bool {
		list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
		})
		if err != nil {
			return false
		}
		got = list.Items
		for _, r := range reasons {
			found := false
			for _, e := range got {
				if e.Reason == r && e.Source.Component == "lastcall" {
					found = true
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
	return got
}

func newNode(t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
	if _, err := env.AddNode(ctx, name, cluster.WithLabels(labels)); err != nil {
		t.Fatalf("adding node: %v", err)
	}
	return name
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ns, err := env.CreateNamespace(ctx, "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func create[T runtime.Object](t *testing.T, obj T, fn func(context.Context, T, metav1.CreateOptions) (T, error)) T {
	t.Helper()
	out, err := fn(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %T: %v", obj, err)
	}
	return out
}

// deployment makes a Deployment of n pods selected by app=name, on nodes
// matching selector, with the given grace period.
func deployment(ns, name string, n int32, selector map[string]string, grace int64) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(labels, selector, grace),
		},
	}
}

func daemonSet(ns, name string, selector map[string]string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(labels, selector, 30),
		},
	}
}

func podTemplate(labels, selector map[string]string, grace int64) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  selector,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
}

func pdb(ns, name string, minAvailable int32) *policyv1.PodDisruptionBudget {
	mina := intstr.FromInt32(minAvailable)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &mina,
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		},
	}
}

// guardedPod runs one pod of a Deployment "api" on node (nodes matching
// pool), behind a PodDisruptionBudget that allows no disruption, and waits
// until the controller-manager has computed the budget, so that evictions
// are refused from the start.
func guardedPod(t *testing.T, ns, node string, pool map[string]string) *corev1.Pod {
	t.Helper()
	create(t, deployment(ns, "api", 1, pool, 30), env.Client.AppsV1().Deployments(ns).Create)
	create(t, pdb(ns, "api", 1), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	var p *corev1.Pod
	waitPods(t, ns, func(pods []*corev1.Pod) bool {
		if on := onNode(pods, node); len(on) == 1 && ready(on[0]) {
			p = on[0]
			return true
		}
		return false
	})
	eventually(t, "the PDB to be computed", func() bool {
		b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "api", metav1.GetOptions{})
		return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 1 && b.Status.DisruptionsAllowed == 0
	})
	return p
}

func onNode(pods []*corev1.Pod, node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

func ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// switchProxy is a reverse proxy whose upstream a test can switch, so that
// the agent keeps one metadata endpoint while the test moves it between
// metadata servers (AEMM has no runtime control API) or breaks it.
type switchProxy struct {
	srv      *http.Server
	url      string
	upstream atomic.Pointer[url.URL]
	// corrupt, when set, answers every metadata path with this body.
	corrupt atomic.Pointer[string]
}

func newSwitchProxy(t *testing.T, upstream string) *switchProxy {
	t.Helper()
	p := &switchProxy{}
	p.set(t, upstream)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.url = "http://" + ln.Addr().String()
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body := p.corrupt.Load(); body != nil && !strings.HasSuffix(r.URL.Path, "/api/token") {
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, *body)
			return
		}
		u := p.upstream.Load()
		if u == nil {
			http.Error(w, "upstream down", http.StatusBadGateway)
			return
		}
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, r)
	})}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *switchProxy) set(t *testing.T, upstream string) {
	t.Helper()
	if upstream == "" {
		p.upstream.Store(nil)
		return
	}
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p.upstream.Store(u)
}
