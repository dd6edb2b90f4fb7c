package bench

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/apiproxy"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// The cluster states BenchmarkAgentCost compares: how many Services and
// how many PodDisruptionBudgets the cluster holds (each), counting the
// agent's own few among them.
var costSizes = []int{100, 2000}

const (
	// costPerNamespace is how many Services (and as many budgets) each
	// namespace of the rest of the cluster holds: 2,000 of each make 200
	// namespaces.
	costPerNamespace = 10
	// costOwnNamespaces and costOwnApps: the agent's pods belong to
	// costOwnApps apps (a Deployment, a Service and a budget each), spread
	// over costOwnNamespaces namespaces.
	costOwnNamespaces = 3
	costOwnApps       = 6
	// costOwnPods is how many pods the agent's node runs.
	costOwnPods = 10
	// costCreateWorkers is how many creates are in flight at once.
	costCreateWorkers = 32
	// costSettleQuiet: the agent has settled once it has made no request
	// to the API server for this long after it became ready.
	costSettleQuiet = 5 * time.Second
	// costSettleTimeout bounds waiting for that.
	costSettleTimeout = 2 * time.Minute
	// costIdleWindow is how long the settled agent's memory is sampled,
	// once a second.
	costIdleWindow = 60 * time.Second
	// costTimeout bounds the whole benchmark.
	costTimeout = 20 * time.Minute
	// costFillPrefix names the namespaces of the rest of the cluster.
	costFillPrefix = "cost-fill-"
)

// BenchmarkAgentCost measures whether an agent's cost grows with the size
// of the cluster rather than of its node. Its node runs costOwnPods pods of
// a few apps, each with a Service and a PodDisruptionBudget; the rest of
// the cluster holds Services and budgets in many namespaces, first
// costSizes[0] of each in all, then costSizes[1]. In each state one agent
// starts with its default settings (AWS, a metadata service with no
// notice), talking to the API server through a counting proxy, in a
// memory cgroup of its own. Reported: what it read until it was ready and
// had settled (response bytes, decompressed and on the wire, of LISTs and
// of watch streams; requests), the watches it opened, and its working set
// over costIdleWindow. An agent whose cost is its node's own reads the
// same in both states.
func BenchmarkAgentCost(b *testing.B) {
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), costTimeout)
		b.Cleanup(cancel)
		node := fmt.Sprintf("cost-%d", time.Now().UnixNano()%1_000_000)
		if _, err := env.AddNode(ctx, node); err != nil {
			b.Fatal(err)
		}
		// The benchmarks after this one find the cluster as it was.
		b.Cleanup(func() {
			begin := time.Now()
			if err := emptyCluster(); err != nil {
				b.Error(err)
			}
			b.Logf("the cluster emptied of this benchmark's namespaces, Services and budgets in %s", time.Since(begin).Round(time.Millisecond))
		})
		if err := placeOwnApps(ctx, node); err != nil {
			b.Fatal(err)
		}
		never := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
		imds, err := aemm.Start(ctx, aemm.Config{MockTriggerTime: never, SpotTime: never.Add(2 * time.Minute),
			RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(imds.Stop)
		var runs []costRun
		for _, n := range costSizes {
			begin := time.Now()
			if err := fillCluster(ctx, n); err != nil {
				b.Fatal(err)
			}
			filled := time.Now()
			services, budgets, err := waitBudgetsObserved(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%d: the cluster holds %d Services and %d PodDisruptionBudgets (created in %s, statuses computed %s later)",
				n, services, budgets, filled.Sub(begin).Round(time.Millisecond), time.Since(filled).Round(time.Millisecond))
			runs = append(runs, measureAgentCost(b, ctx, node, imds.URL(), n))
		}
		reportCost(b, runs[0], runs[len(runs)-1])
	}
}

// costRun is what one agent did in one state of the cluster.
type costRun struct {
	size           int
	ready, settled time.Duration // from its start
	didSettle      bool
	startup, idle  apiproxy.Counts
	maxWS          int64 // -1: no memory cgroup
	noCgroup       string
	maxRSS, heap   int64
}

// measureAgentCost starts an agent on node behind a counting proxy, waits
// for it to be ready and to settle, samples its memory over
// costIdleWindow and stops it.
func measureAgentCost(b *testing.B, ctx context.Context, node, imdsURL string, size int) costRun {
	b.Helper()
	r := costRun{size: size, maxWS: -1}
	proxy, err := apiproxy.Start(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := proxy.WriteKubeconfig(kubeconfig); err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("%s-%d", node, size)
	cfg := agentproc.Config{Binary: coldCopy(b, lastcallBinary(b)), Node: node, Kubeconfig: kubeconfig, IMDS: imdsURL,
		LogPath: filepath.Join(env.Dir, "logs", "lastcall-"+name+".log")}
	cg, why := newMemcg(b, name)
	if cg != nil {
		cfg.Cgroup = cg.dir
	}
	r.noCgroup = why
	begin := time.Now()
	a, err := agentproc.Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Stop()
	r.ready = time.Since(begin)

	// Settled: no request for costSettleQuiet.
	deadline := begin.Add(costSettleTimeout)
	for {
		quiet := time.Since(proxy.LastRequest())
		if quiet >= costSettleQuiet {
			r.didSettle, r.settled = true, time.Since(begin)-quiet
			break
		}
		if time.Now().After(deadline) {
			r.settled = time.Since(begin)
			b.Logf("%d: the agent still made requests %s after it started; counting up to now", size, costSettleTimeout)
			break
		}
		time.Sleep(min(costSettleQuiet-quiet, 250*time.Millisecond))
	}
	r.startup = proxy.Counts()

	start := time.Now()
	for time.Since(start) < costIdleWindow {
		time.Sleep(time.Second) // the sampling period
		st, err := agentproc.Status(a.PID())
		if err != nil {
			b.Fatal(err)
		}
		r.maxRSS = max(r.maxRSS, st["VmRSS"])
		if cg != nil {
			_, ws, err := cg.usage()
			if err != nil {
				b.Fatal(err)
			}
			r.maxWS = max(r.maxWS, ws)
		}
	}
	r.idle = proxy.Counts().Since(r.startup)
	r.heap = int64(costMetric(b, "http://"+a.Addr+"/metrics", "go_memstats_heap_inuse_bytes"))
	if err := a.Stop(); err != nil {
		b.Logf("%d: the agent's exit: %v", size, err)
	}
	b.Logf("%d: ready after %s, settled after %s; until then: %s; over the next %s: %s", size,
		r.ready.Round(time.Millisecond), r.settled.Round(time.Millisecond), costLine(r.startup), costIdleWindow, costLine(r.idle))
	return r
}

// placeOwnApps makes the agent's node run costOwnPods pods of costOwnApps
// apps in costOwnNamespaces namespaces, each app with a Deployment pinned
// to the node, a Service and a budget, and waits until they run.
func placeOwnApps(ctx context.Context, node string) error {
	namespaces := make([]string, costOwnNamespaces)
	for i := range namespaces {
		ns, err := env.CreateNamespace(ctx, "cost-own")
		if err != nil {
			return err
		}
		namespaces[i] = ns
	}
	for app := range costOwnApps {
		ns, name := namespaces[app%costOwnNamespaces], fmt.Sprintf("app-%d", app)
		replicas := int32(costOwnPods / costOwnApps)
		if app < costOwnPods%costOwnApps {
			replicas++
		}
		labels := costAppLabels(name)
		d := &appsv1.Deployment{
			ObjectMeta: costAppMeta(ns, name),
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					Containers: []corev1.Container{{Name: "app", Image: "registry.example/" + name + ":1",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}}}},
				}}},
		}
		if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating Deployment %s/%s: %w", ns, name, err)
		}
		if err := costCreateService(ctx, ns, name); err != nil {
			return err
		}
		if err := costCreateBudget(ctx, ns, name); err != nil {
			return err
		}
		if err := env.WaitPodsReady(ctx, ns, "app.kubernetes.io/name="+name, int(replicas)); err != nil {
			return err
		}
	}
	return nil
}

// fillCluster creates Services and budgets in namespaces of costFillPrefix,
// costPerNamespace of each per namespace, until the cluster holds n of
// each. Creates run costCreateWorkers at once.
func fillCluster(ctx context.Context, n int) error {
	services, err := env.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	budgets, err := env.Client.PolicyV1().PodDisruptionBudgets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	// The fill's objects are numbered 0, 1, ...: it needs n less those
	// outside it.
	wantServices, wantBudgets := n, n
	for _, s := range services.Items {
		if !strings.HasPrefix(s.Namespace, costFillPrefix) {
			wantServices--
		}
	}
	for _, p := range budgets.Items {
		if !strings.HasPrefix(p.Namespace, costFillPrefix) {
			wantBudgets--
		}
	}
	fillNS := func(i int) string { return fmt.Sprintf("%s%03d", costFillPrefix, i/costPerNamespace) }
	fillName := func(i int) string { return fmt.Sprintf("app-%d", i%costPerNamespace) }
	var jobs []func(context.Context) error
	for i := 0; i < max(wantServices, wantBudgets); i += costPerNamespace {
		jobs = append(jobs, func(ctx context.Context) error {
			_, err := env.Client.CoreV1().Namespaces().Create(ctx,
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fillNS(i), Labels: map[string]string{"team": fillNS(i)}}}, metav1.CreateOptions{})
			return costIgnoreExists(err)
		})
	}
	if err := costRunConcurrently(ctx, costCreateWorkers, jobs); err != nil {
		return fmt.Errorf("creating namespaces: %w", err)
	}
	jobs = jobs[:0]
	for i := range wantServices {
		jobs = append(jobs, func(ctx context.Context) error {
			return costIgnoreExists(costCreateService(ctx, fillNS(i), fillName(i)))
		})
	}
	for i := range wantBudgets {
		jobs = append(jobs, func(ctx context.Context) error {
			return costIgnoreExists(costCreateBudget(ctx, fillNS(i), fillName(i)))
		})
	}
	return costRunConcurrently(ctx, costCreateWorkers, jobs)
}

// waitBudgetsObserved waits until the disruption controller has computed
// the status of every budget of the cluster, so that the agent starts in a
// quiet cluster, and returns how many Services and budgets it holds. It
// watches rather than lists again and again: the controller updates about
// ten budgets a second here, and repeated lists of thousands would slow it.
func waitBudgetsObserved(ctx context.Context) (services, budgets int, err error) {
	lw := cache.NewListWatchFromClient(env.Client.PolicyV1().RESTClient(), "poddisruptionbudgets", metav1.NamespaceAll, fields.Everything())
	observed := func(p *policyv1.PodDisruptionBudget) bool { return p.Status.ObservedGeneration >= p.Generation }
	pending := map[string]bool{}
	precondition := func(store cache.Store) (bool, error) {
		for _, o := range store.List() {
			if p := o.(*policyv1.PodDisruptionBudget); !observed(p) {
				pending[p.Namespace+"/"+p.Name] = true
			}
		}
		return len(pending) == 0, nil
	}
	condition := func(ev watch.Event) (bool, error) {
		if p, ok := ev.Object.(*policyv1.PodDisruptionBudget); ok {
			if k := p.Namespace + "/" + p.Name; ev.Type == watch.Deleted || observed(p) {
				delete(pending, k)
			} else {
				pending[k] = true
			}
		}
		return len(pending) == 0, nil
	}
	if _, err := watchtools.UntilWithSync(ctx, lw, &policyv1.PodDisruptionBudget{}, precondition, condition); err != nil {
		return 0, 0, fmt.Errorf("waiting for the status of %d budgets: %w", len(pending), err)
	}
	svcs, err := env.Client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, err
	}
	pdbs, err := env.Client.PolicyV1().PodDisruptionBudgets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, err
	}
	return len(svcs.Items), len(pdbs.Items), nil
}

// emptyCluster deletes the namespaces this benchmark made, their Services
// and budgets first (the namespace controller would take longer), and
// waits until none of those is left.
func emptyCluster() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ours := func(ns string) bool { return strings.HasPrefix(ns, "cost-") }
	// deletions lists the Services and budgets of those namespaces, as
	// jobs deleting them.
	deletions := func() ([]func(context.Context) error, error) {
		var jobs []func(context.Context) error
		services, err := env.Client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, s := range services.Items {
			if ours(s.Namespace) {
				jobs = append(jobs, func(ctx context.Context) error {
					return costIgnoreNotFound(env.Client.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}))
				})
			}
		}
		budgets, err := env.Client.PolicyV1().PodDisruptionBudgets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, p := range budgets.Items {
			if ours(p.Namespace) {
				jobs = append(jobs, func(ctx context.Context) error {
					return costIgnoreNotFound(env.Client.PolicyV1().PodDisruptionBudgets(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}))
				})
			}
		}
		return jobs, nil
	}
	jobs, err := deletions()
	if err != nil {
		return err
	}
	namespaces, err := env.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, ns := range namespaces.Items {
		if ours(ns.Name) {
			jobs = append(jobs, func(ctx context.Context) error {
				return costIgnoreNotFound(env.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}))
			})
		}
	}
	if err := costRunConcurrently(ctx, costCreateWorkers, jobs); err != nil {
		return fmt.Errorf("emptying the cluster: %w", err)
	}
	for {
		left, err := deletions()
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("emptying the cluster: %d Services and budgets left: %w", len(left), ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func costIgnoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// costRunConcurrently runs jobs, workers at a time, and returns the first
// error; after one, the jobs not started are left out.
func costRunConcurrently(ctx context.Context, workers int, jobs []func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan func(context.Context) error)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for job := range next {
				if err := job(ctx); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, job := range jobs {
		select {
		case next <- job:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

func costIgnoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// costAppLabels select an app's pods.
func costAppLabels(name string) map[string]string {
	return map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
}

// costAppMeta is the metadata of an object of an app installed by Helm, as
// most of a cluster's are.
func costAppMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns,
		Labels: map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name,
			"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": name + "-1.0.0"},
		Annotations: map[string]string{"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns}}
}

// costCreateService creates an app's Service: headless, since the cluster's
// service IP range (a /24) holds far fewer than 2,000 addresses.
func costCreateService(ctx context.Context, ns, name string) error {
	s := &corev1.Service{ObjectMeta: costAppMeta(ns, name), Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Selector: costAppLabels(name),
		Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")},
			{Name: "metrics", Port: 9090, TargetPort: intstr.FromString("metrics")}},
	}}
	if _, err := env.Client.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s/%s: %w", ns, name, err)
	}
	return nil
}

// costCreateBudget creates an app's budget: one pod down at a time.
func costCreateBudget(ctx context.Context, ns, name string) error {
	one := intstr.FromInt32(1)
	p := &policyv1.PodDisruptionBudget{ObjectMeta: costAppMeta(ns, name), Spec: policyv1.PodDisruptionBudgetSpec{
		MaxUnavailable: &one, Selector: &metav1.LabelSelector{MatchLabels: costAppLabels(name)},
	}}
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating PodDisruptionBudget %s/%s: %w", ns, name, err)
	}
	return nil
}

// costMetric reads one unlabelled sample from a /metrics page.
func costMetric(b *testing.B, url, name string) float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) != 1 {
		b.Fatalf("%s: no single sample of %s", url, name)
	}
	m := mf.GetMetric()[0]
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// reportCost adds the rows comparing the small and the large cluster.
func reportCost(b *testing.B, small, large costRun) {
	const flat = "flat (ratio ≈ 1)"
	sizes := fmt.Sprintf("%s → %s", costThousands(small.size), costThousands(large.size))
	for _, r := range []costRun{small, large} {
		list, watch := r.startup.Verb("list"), r.startup.Verb("watch")
		b.ReportMetric(float64(list.Decoded), fmt.Sprintf("list-bytes-%d", r.size))
		b.ReportMetric(float64(watch.Decoded), fmt.Sprintf("watch-bytes-%d", r.size))
		b.ReportMetric(float64(watch.Requests), fmt.Sprintf("watches-%d", r.size))
		if r.maxWS >= 0 {
			b.ReportMetric(float64(r.maxWS)/(1<<20), fmt.Sprintf("ws-MiB-%d", r.size))
		}
	}
	settled := func(r costRun) string {
		s := r.settled.Round(10 * time.Millisecond).String()
		if !r.didSettle {
			s = "not settled after " + s
		}
		return s
	}
	results.add(fmt.Sprintf("agent start-up, %s Services and as many PodDisruptionBudgets in the cluster, %d pods on its node: bytes of every response until ready and settled, decompressed",
		sizes, costOwnPods), costBytes(small.startup.Total(), large.startup.Total()), "", flat)
	results.add("  of which LIST responses (the API server gzips those over 128 KiB)",
		costBytes(small.startup.Verb("list"), large.startup.Verb("list")), "", flat)
	results.add("  of which watch streams (client-go's watch-list brings a watch's initial objects in its stream, not a LIST)",
		costBytes(small.startup.Verb("watch"), large.startup.Verb("watch")), "", flat)
	results.add("  requests until settled: LIST / GET / other (watches below); settled after",
		fmt.Sprintf("%d / %d / %d, %s → %d / %d / %d, %s",
			small.startup.Verb("list").Requests, small.startup.Verb("get").Requests, costOthers(small.startup), settled(small),
			large.startup.Verb("list").Requests, large.startup.Verb("get").Requests, costOthers(large.startup), settled(large)), "", "")
	results.add("agent watches opened, by resource",
		fmt.Sprintf("%s → %s", costWatches(small.startup), costWatches(large.startup)), "", flat)
	if small.maxWS >= 0 && large.maxWS >= 0 {
		results.add(fmt.Sprintf("agent idle working set (cgroup usage less inactive file pages, max over %s)", costIdleWindow),
			costCompare(small.maxWS, large.maxWS, mib), "", flat)
	} else {
		results.add("agent idle working set", "not measured: "+small.noCgroup+large.noCgroup, "", flat)
	}
	results.add(fmt.Sprintf("  idle RSS (max over %s) / Go heap in use at its end", costIdleWindow),
		fmt.Sprintf("%s / %s → %s / %s", mib(small.maxRSS), mib(small.heap), mib(large.maxRSS), mib(large.heap)), "", "")
	results.add(fmt.Sprintf("  while idle (%s): requests / watch bytes received", costIdleWindow),
		fmt.Sprintf("%d / %s → %d / %s", small.idle.Total().Requests, costKiB(small.idle.Verb("watch").Decoded),
			large.idle.Total().Requests, costKiB(large.idle.Verb("watch").Decoded)), "", "")
}

// costLine writes counts on one line: requests and bytes of each key.
func costLine(c apiproxy.Counts) string {
	var parts []string
	for _, k := range c.Keys() {
		n := c[k]
		size := costKiB(n.Bytes)
		if n.Decoded != n.Bytes {
			size += ", " + costKiB(n.Decoded) + " decompressed"
		}
		parts = append(parts, fmt.Sprintf("%s %d (%s)", k, n.Requests, size))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// costBytes compares the decompressed bytes of two counts, then those on
// the wire.
func costBytes(small, large apiproxy.Count) string {
	s := costCompare(small.Decoded, large.Decoded, costKiB)
	if small.Bytes == 0 && large.Bytes == 0 {
		return s
	}
	return fmt.Sprintf("%s; on the wire %s → %s", s, costKiB(small.Bytes), costKiB(large.Bytes))
}

// costCompare writes small → large and their ratio.
func costCompare(small, large int64, unit func(int64) string) string {
	ratio := "ratio n/a"
	switch {
	case small == 0 && large == 0:
		ratio = "none in either"
	case small > 0:
		ratio = fmt.Sprintf("ratio %.2f", float64(large)/float64(small))
	}
	return fmt.Sprintf("%s → %s (%s)", unit(small), unit(large), ratio)
}

// others counts the requests that are neither LIST, GET nor watch.
func costOthers(c apiproxy.Counts) int64 {
	return c.Total().Requests - c.Verb("list").Requests - c.Verb("get").Requests - c.Verb("watch").Requests
}

// costWatches writes how many watches were opened, then how many of
// each resource.
func costWatches(c apiproxy.Counts) string {
	var parts []string
	var n int64
	for _, k := range c.Keys() {
		if k.Verb == "watch" {
			w := c[k].Requests
			n += w
			s := k.ResourceName()
			if w != 1 {
				s += fmt.Sprintf(" ×%d", w)
			}
			parts = append(parts, s)
		}
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func costKiB(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n >= 1<<20:
		return mib(n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// costThousands writes n with a comma between thousands.
func costThousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
