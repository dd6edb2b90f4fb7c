package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/lastcall/lastcall/pkg/plan"
	"github.com/lastcall/lastcall/pkg/serving"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
	"github.com/lastcall/lastcall/test/traffic"
)

// The scenario's timing: load at trafficRate from trafficBefore before the
// notice to trafficAfter after the node dies, through a balancer that
// applies endpoint changes trafficPropagation late.
const (
	trafficRate        = 600
	trafficBefore      = 2 * time.Second
	trafficAfter       = 2 * time.Second
	trafficPropagation = time.Second
	// trafficGrace is the pods' termination grace period: it fits a GCE
	// window.
	trafficGrace = 20
)

// The windows between a notice and the node's death.
const (
	gceWindow  = 30 * time.Second
	spotWindow = 2 * time.Minute
)

// trafficVariant is a workload served through the drain.
type trafficVariant struct {
	name, label string
	replicas    int32
	// preStop is the preStop sleep of the pods; 0 for none. Their servers
	// stop gracefully on SIGTERM.
	preStop time.Duration
	// minAvailable is the PodDisruptionBudget's; 0 for no budget.
	minAvailable int32
	// packed puts every replica on the doomed node: it is the pool's only
	// node until they are Ready, and the others join afterwards, so
	// replacements land there. Otherwise required pod anti-affinity puts
	// one replica on each of 3 nodes.
	packed bool
	// gated gives the pods lastcall's serving readiness gate: a lastcall
	// agent that gets no notice keeps it on every node, as the DaemonSet
	// does, whatever the handler.
	gated bool
	// startup is how long the pods' application takes to start; 0 for
	// at once.
	startup time.Duration
	// grace, when set, is the pods' termination grace period in seconds
	// instead of trafficGrace.
	grace int64
	// sigterm is what the servers do on SIGTERM (podrun.Graceful if
	// unset).
	sigterm string
	// nodeLB sends the load through a node-level load balancer (instance
	// mode, nodeLBDelay of deregistration) to a kube-proxy on each node
	// that forwards to any ready endpoint, rather than through the
	// pod-level balancer alone.
	nodeLB bool
	// lbDelay is lastcall's --lb-deregistration-delay (its default, 0,
	// when unset); lastcall plan is given it too.
	lbDelay time.Duration
}

// nodeLBDelay is the node-level load balancer's deregistration delay.
const nodeLBDelay = 5 * time.Second

// settings are lastcall's settings for the variant.
func (v trafficVariant) settings() []string {
	if v.lbDelay == 0 {
		return nil
	}
	return []string{"LASTCALL_LB_DEREGISTRATION_DELAY=" + v.lbDelay.String()}
}

var trafficVariants = []trafficVariant{
	{name: "prestop", label: "preStop sleep 2 s, graceful SIGTERM, 3 replicas one per node, PDB minAvailable 2",
		replicas: 3, preStop: 2 * time.Second, minAvailable: 2},
	{name: "no-prestop", label: "no preStop, graceful SIGTERM, 3 replicas one per node, PDB minAvailable 2",
		replicas: 3, minAvailable: 2},
	{name: "gated", label: "no preStop, lastcall.io/serving readiness gate, graceful SIGTERM, 3 replicas one per node, PDB minAvailable 2",
		replicas: 3, minAvailable: 2, gated: true},
	{name: "all-on-doomed", label: "preStop 2 s, every replica (3) on the doomed node, PDB minAvailable 2",
		replicas: 3, preStop: 2 * time.Second, minAvailable: 2, packed: true},
	{name: "all-on-doomed-no-pdb", label: "preStop 2 s, every replica (3) on the doomed node, no PDB, 3 s to start",
		replicas: 3, preStop: 2 * time.Second, packed: true, startup: 3 * time.Second},
	// A budget on a single replica either forbids every eviction or allows
	// it outright: it has none.
	{name: "single", label: "preStop 2 s, a single replica, no PDB",
		replicas: 1, preStop: 2 * time.Second, packed: true},
	{name: "long-grace", label: "preStop 2 s, SIGTERM ignored, grace period 60 s (longer than the GCE window), 3 replicas one per node, PDB minAvailable 2",
		replicas: 3, preStop: 2 * time.Second, minAvailable: 2, grace: 60, sigterm: podrun.Ignore},
	{name: "node-lb", label: "preStop 2 s, 3 replicas one per node, PDB minAvailable 2, through a node-level load balancer (5 s deregistration) and kube-proxy, lastcall's --lb-deregistration-delay 5s",
		replicas: 3, preStop: 2 * time.Second, minAvailable: 2, nodeLB: true, lbDelay: nodeLBDelay},
	{name: "node-lb-no-delay", label: "preStop 2 s, 3 replicas one per node, PDB minAvailable 2, through a node-level load balancer (5 s deregistration) and kube-proxy, lastcall's --lb-deregistration-delay 0",
		replicas: 3, preStop: 2 * time.Second, minAvailable: 2, nodeLB: true},
	{name: "no-pdb", label: "preStop 2 s, 3 replicas one per node, no PDB",
		replicas: 3, preStop: 2 * time.Second},
}

// trafficHandler is what, if anything, acts on the notice before the node
// dies at the end of window.
type trafficHandler struct {
	name, label string
	window      time.Duration
	// setup runs once before any run, outside any clock.
	setup func(b *testing.B)
	// arm readies the handler for the doomed node, before the load starts.
	arm armFunc
}

// armFunc readies a handler for node; settings (LASTCALL_*) are the
// variant's, for lastcall's handlers.
type armFunc func(b *testing.B, ctx context.Context, node string, settings []string) notice

// notice is how an armed handler is told of the interruption.
type notice struct {
	// at, when set, is when the notice appears by itself (a metadata
	// mock's trigger, fixed when it started); otherwise deliver gives it
	// once the load has run trafficBefore.
	at      time.Time
	deliver func()
	// drained delivers when the handler reports its drain done, if it
	// does.
	drained <-chan time.Time
	// dies, if set, delivers when the instance goes before the end of the
	// window (a lifecycle action completed).
	dies <-chan time.Time
	// stop ends what arm started.
	stop func()
}

var trafficHandlers = []trafficHandler{
	{name: "none", label: "no handler (the node dies 30 s after a GCE preemption)", window: gceWindow, arm: armNone},
	{name: "lastcall-gce", label: "lastcall, GCE preemption (30 s)", window: gceWindow,
		setup: func(b *testing.B) { lastcallBinary(b) }, arm: armLastcallGCE},
	{name: "lastcall-gce-unkept", label: "lastcall, GCE preemption (30 s), --keep-services-serving=false", window: gceWindow,
		setup: func(b *testing.B) { lastcallBinary(b) }, arm: armLastcallGCEWith("LASTCALL_KEEP_SERVICES_SERVING=false")},
	{name: "kubectl-drain", label: "`kubectl drain` at the notice (30 s window)", window: gceWindow, arm: armKubectl},
	{name: "lastcall-ec2", label: "lastcall, EC2 spot notice (2 min)", window: spotWindow,
		setup: func(b *testing.B) { lastcallBinary(b) }, arm: armSpot(lastcallRun)},
	{name: "lastcall-queue", label: "lastcall queue processor, terminate lifecycle hook (the instance goes once it is completed, 2 min at most)",
		window: spotWindow, setup: func(b *testing.B) { lastcallBinary(b) }, arm: armQueue},
	{name: "nth-ec2", label: nthName + ", EC2 spot notice (2 min)", window: spotWindow,
		setup: func(b *testing.B) { nthSetup(b) }, arm: armSpot(nthRun)},
}

// BenchmarkTrafficThroughDrain counts the requests that fail while a node
// serving a Service is interrupted, for each workload variant and each
// handler, the no-handler baseline first. Each run has a namespace, a pool
// of kwok nodes and a pod runtime (podrun) of its own: a Deployment behind
// a Service and a pod-level balancer (1 s propagation), load at 600 req/s
// from 2 s before the notice to 2 s after the node dies, the handler given
// the notice, and the node killed (its servers reset) at the end of the
// window. LASTCALL_BENCH_TRAFFIC and LASTCALL_BENCH_HANDLERS (comma
// separated names) choose a subset.
func BenchmarkTrafficThroughDrain(b *testing.B) {
	variants := pick(b, "LASTCALL_BENCH_TRAFFIC", trafficVariants, func(v trafficVariant) string { return v.name })
	handlers := pick(b, "LASTCALL_BENCH_HANDLERS", trafficHandlers, func(h trafficHandler) string { return h.name })
	for _, h := range handlers {
		if h.setup != nil {
			h.setup(b)
		}
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var baseline string
			for _, h := range handlers {
				b.Run(h.name, func(b *testing.B) {
					for range b.N {
						s, verdict := runTraffic(b, v, h)
						b.ReportMetric(float64(s.Failed()), "failed-requests")
						b.ReportMetric(float64(s.Sent), "sent-requests")
						fig := failedOf(s)
						anchor := ""
						if h.name == "none" {
							baseline = fig
						} else if baseline != "" {
							anchor = "no handler: " + baseline
						}
						results.add(fmt.Sprintf("traffic: %s (lastcall plan: %s), %s", v.label, verdict, h.label), fig, anchor, "")
					}
				})
			}
		})
	}
}

// runTraffic runs the scenario once and returns what the load saw, and
// what lastcall plan said of the doomed node just before the notice.
func runTraffic(b *testing.B, v trafficVariant, h trafficHandler) (traffic.Summary, string) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	setupCtx, setupDone := context.WithTimeout(ctx, waitTimeout)
	defer setupDone()
	ns, err := env.CreateNamespace(setupCtx, "traffic-")
	if err != nil {
		b.Fatal(err)
	}
	pool := map[string]string{"pool": ns}
	doomed := uniq("traffic")
	keepers := map[string]func(){}
	defer func() {
		for _, stop := range keepers {
			stop()
		}
	}()
	var nodes []string
	add := func(name string) {
		addNode(b, name, pool)
		nodes = append(nodes, name)
		if v.gated {
			keepers[name] = startKeeper(b, name)
		}
	}
	add(doomed)
	if !v.packed {
		add(uniq("traffic-b"))
		add(uniq("traffic-c"))
	}

	logf, err := os.Create(filepath.Join(env.Dir, "logs", "traffic-"+ns+".log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	log := slog.New(slog.NewTextHandler(logf, nil))
	rt, err := podrun.Start(ctx, env.Client, "traffic="+ns, podrun.WithLogger(log.With("source", "podrun")))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Wait()
	defer cancel() // before rt.Wait

	createWeb(b, setupCtx, ns, v, pool)
	if v.nodeLB {
		// Gone with the run, so no later run's plan takes the balancer to
		// send through its nodes.
		defer func() {
			if err := env.Client.CoreV1().Services(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
				b.Errorf("deleting the load-balanced Service: %v", err)
			}
		}()
	}
	if err := env.WaitPodsReady(setupCtx, ns, "app=web,traffic="+ns, int(v.replicas)); err != nil {
		b.Fatal(err)
	}
	want := 1
	if v.packed {
		want = int(v.replicas)
	}
	if on := readyOn(b, setupCtx, ns, doomed); on != want {
		b.Fatalf("%d ready replicas on the doomed node %s, want %d", on, doomed, want)
	}
	add(uniq("traffic-spare"))
	if stop, ok := keepers[doomed]; ok {
		// The gates it set stay; the handler's own agent, if lastcall's,
		// keeps them from now on.
		stop()
		delete(keepers, doomed)
	}
	if v.minAvailable > 0 {
		poll(b, setupCtx, "the PodDisruptionBudget computed", func() bool {
			p, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(setupCtx, "web", metav1.GetOptions{})
			return err == nil && p.Status.ObservedGeneration == p.Generation &&
				p.Status.CurrentHealthy == v.replicas && p.Status.DisruptionsAllowed == v.replicas-v.minAvailable
		})
	}

	bal, err := traffic.StartPodBalancer(ctx, env.Client, traffic.PodBalancerConfig{Namespace: ns, Service: "web",
		Resolve: rt.AddrOf, PropagationDelay: trafficPropagation, Proxy: traffic.ProxyConfig{Logger: log.With("source", "balancer")}})
	if err != nil {
		b.Fatal(err)
	}
	poll(b, setupCtx, "the balancer sending to every replica", func() bool { return len(bal.Backends()) == int(v.replicas) })
	target, killProxy := bal.URL(), func(string) {}
	if v.nodeLB {
		target, killProxy = startNodePath(b, ctx, setupCtx, ns, nodes, rt, log)
	}

	verdict := planVerdict(b, doomed, h.window, v.lbDelay)
	n := h.arm(b, ctx, doomed, v.settings())
	defer n.stop()
	if !n.at.IsZero() {
		start := n.at.Add(-trafficBefore)
		if time.Now().After(start) {
			b.Fatalf("%s took until after the load was due to start; widen noticeLead", h.name)
		}
		waitUntil(ctx, start)
	}
	var sent atomic.Int64
	var failMu sync.Mutex
	var failures []traffic.Result // the first few, to say when they came
	lg, err := traffic.NewLoadGen(target, trafficRate, traffic.WithDuration(trafficBefore+h.window+trafficAfter),
		traffic.WithObserver(func(r traffic.Result) {
			sent.Add(1)
			if r.Outcome != traffic.OK {
				failMu.Lock()
				if len(failures) < 5 {
					failures = append(failures, r)
				}
				failMu.Unlock()
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan traffic.Summary, 1)
	go func() { done <- lg.Run(ctx) }()
	var noticed time.Time
	if n.at.IsZero() {
		flowCtx, flowDone := context.WithTimeout(ctx, 30*time.Second)
		poll(b, flowCtx, "load flowing", func() bool { return float64(sent.Load()) >= trafficRate*trafficBefore.Seconds() })
		flowDone()
		noticed = time.Now()
		n.deliver()
	} else {
		waitUntil(ctx, n.at)
		noticed = n.at
	}

	// The node dies at the end of the window, drained or not.
	deadline := time.NewTimer(time.Until(noticed.Add(h.window)))
	defer deadline.Stop()
	drained := n.drained
	for waiting := true; waiting; {
		select {
		case at := <-drained:
			b.Logf("%s: drain done %s after the notice", h.name, at.Sub(noticed).Round(10*time.Millisecond))
			b.ReportMetric(at.Sub(noticed).Seconds(), "drained-after-notice-s")
			drained = nil
		case <-n.dies:
			b.Logf("%s: the instance went %s after the notice", h.name, time.Since(noticed).Round(10*time.Millisecond))
			waiting = false
		case <-deadline.C:
			waiting = false
		}
	}
	if n.drained != nil && drained != nil {
		b.Logf("%s: drain not done when the node died", h.name)
	}
	rt.KillNode(doomed)
	killProxy(doomed)
	s := <-done
	b.Logf("%s", s)
	for _, o := range traffic.Outcomes {
		if ex, ok := s.Examples[o]; ok {
			b.Logf("  first %s: %s", o, ex)
		}
	}
	failMu.Lock()
	for _, r := range failures {
		b.Logf("  failed request %d sent %s after the notice: %s %d %v", r.Seq, r.Start.Sub(noticed).Round(time.Millisecond), r.Outcome, r.Code, r.Err)
	}
	failMu.Unlock()
	return s, verdict
}

// planVerdict runs lastcall plan on node for a deadline window away, with
// lbDelay of load-balancer delay, and says what it flags: its blockers'
// reasons, the node's included, and the Services it would drain one at a
// time; "clean" if nothing.
func planVerdict(b *testing.B, node string, window, lbDelay time.Duration) string {
	b.Helper()
	out, err := exec.Command(lastcallBinary(b), "plan", "--node", node, "--kubeconfig", env.Kubeconfig, "-o", "json",
		"--deadline", window.String(), "--lb-deregistration-delay", lbDelay.String()).Output()
	var p plan.Plan
	if jerr := json.Unmarshal(out, &p); jerr != nil {
		b.Fatalf("lastcall plan: %v, %v", err, jerr)
	}
	var said []string
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			for _, bl := range pod.Blockers {
				if !slices.Contains(said, string(bl.Reason)) {
					said = append(said, string(bl.Reason))
				}
			}
		}
	}
	for _, bl := range p.NodeBlockers {
		if !slices.Contains(said, string(bl.Reason)) {
			said = append(said, string(bl.Reason))
		}
	}
	slices.Sort(said)
	if len(p.OneAtATime) > 0 {
		said = append(said, "one at a time")
	}
	if len(said) == 0 {
		return "clean"
	}
	return strings.Join(said, ", ")
}

// startNodePath starts a kube-proxy on each node (a pod-level balancer
// forwarding to any ready endpoint of the Service, as with
// externalTrafficPolicy Cluster) and a node-level load balancer over the
// pool's nodes in front of them, with nodeLBDelay of deregistration. It
// returns the load balancer's URL and how to stop a node's kube-proxy when
// the node dies.
func startNodePath(b *testing.B, ctx, setupCtx context.Context, ns string, nodes []string, rt *podrun.Runtime, log *slog.Logger) (string, func(string)) {
	b.Helper()
	proxies, stops := map[string]string{}, map[string]context.CancelFunc{}
	for _, n := range nodes {
		pctx, stop := context.WithCancel(ctx)
		kp, err := traffic.StartPodBalancer(pctx, env.Client, traffic.PodBalancerConfig{Namespace: ns, Service: "web",
			Resolve: rt.AddrOf, PropagationDelay: trafficPropagation, Proxy: traffic.ProxyConfig{Logger: log.With("source", "kube-proxy", "node", n)}})
		if err != nil {
			stop()
			b.Fatal(err)
		}
		proxies[n], stops[n] = strings.TrimPrefix(kp.URL(), "http://"), stop
	}
	lb, err := traffic.StartNodeBalancer(ctx, env.Client, traffic.NodeBalancerConfig{Selector: "pool=" + ns,
		Target:              func(n string) (string, bool) { a, ok := proxies[n]; return a, ok },
		DeregistrationDelay: nodeLBDelay, Proxy: traffic.ProxyConfig{Logger: log.With("source", "node-balancer")}})
	if err != nil {
		b.Fatal(err)
	}
	poll(b, setupCtx, "the node-level load balancer sending to every node", func() bool { return len(lb.Nodes()) == len(nodes) })
	return lb.URL(), func(n string) {
		if stop, ok := stops[n]; ok {
			stop()
		}
	}
}

// createWeb creates the Service, the budget if any, and the Deployment
// "web" of the variant in ns, its pods served by podrun and confined to
// the pool's nodes.
func createWeb(b *testing.B, ctx context.Context, ns string, v trafficVariant, pool map[string]string) {
	b.Helper()
	selector := map[string]string{"app": "web", "traffic": ns}
	labels := map[string]string{"app": "web", "traffic": ns, cluster.ServedLabel: "true"}
	grace := int64(trafficGrace)
	if v.grace > 0 {
		grace = v.grace
	}
	c := corev1.Container{Name: "web", Image: "registry.example/web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}
	if v.preStop > 0 {
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(v.preStop / time.Second)}}}
	}
	spec := corev1.PodSpec{NodeSelector: pool, TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{c}}
	if v.gated {
		spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: serving.Gate}}
	}
	if !v.packed {
		spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector}, TopologyKey: corev1.LabelHostname}}}}
	}
	annotations := map[string]string{podrun.SignalAnnotation: podrun.Graceful}
	if v.sigterm != "" {
		annotations[podrun.SignalAnnotation] = v.sigterm
	}
	if v.startup > 0 {
		annotations[podrun.StartupAnnotation] = v.startup.String()
	}
	replicas := v.replicas
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec:       spec,
			}},
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
		Selector: selector, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if v.nodeLB {
		// What a cloud load balancer in instance mode serves, through
		// every node (externalTrafficPolicy Cluster).
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	if _, err := env.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if v.minAvailable > 0 {
		minAvail := intstr.FromInt32(v.minAvailable)
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: selector}}}
		if _, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// readyOn counts the Ready pods of ns on node.
func readyOn(b *testing.B, ctx context.Context, ns, node string) int {
	b.Helper()
	list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for i := range list.Items {
		if p := &list.Items[i]; p.Spec.NodeName == node && cluster.PodReady(p) {
			n++
		}
	}
	return n
}

func armNone(*testing.B, context.Context, string, []string) notice {
	return notice{deliver: func() {}, stop: func() {}}
}

// failedOf is the table's figure: failed of sent, by outcome.
func failedOf(s traffic.Summary) string {
	fig := fmt.Sprintf("%d failed of %d", s.Failed(), s.Sent)
	var by []string
	for _, o := range traffic.Outcomes {
		if n := s.Counts[o]; n > 0 && o != traffic.OK {
			by = append(by, fmt.Sprintf("%s: %d", o, n))
		}
	}
	if len(by) > 0 {
		fig += " (" + strings.Join(by, ", ") + ")"
	}
	return fig
}

// pick keeps the items whose names the environment variable lists (comma
// separated), or all if it is unset, and fails on a name it does not know.
func pick[T any](b *testing.B, variable string, all []T, name func(T) string) []T {
	b.Helper()
	v := strings.TrimSpace(os.Getenv(variable))
	if v == "" {
		return all
	}
	var out []T
	for _, want := range strings.Split(v, ",") {
		want = strings.TrimSpace(want)
		found := false
		for _, it := range all {
			if name(it) == want {
				out, found = append(out, it), true
			}
		}
		if !found {
			var names []string
			for _, it := range all {
				names = append(names, name(it))
			}
			b.Fatalf("%s: unknown %q; known: %s", variable, want, strings.Join(names, ","))
		}
	}
	return out
}

// poll checks cond every 20 ms until it holds, failing when ctx ends.
func poll(b *testing.B, ctx context.Context, what string, cond func() bool) {
	b.Helper()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			b.Fatalf("waiting for %s: %v", what, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// waitUntil waits until t or the end of ctx.
func waitUntil(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
