package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/pkg/plan"
	"github.com/lastcall/lastcall/pkg/plan/render"
	"github.com/lastcall/lastcall/pkg/plancmd"
	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/golden"
	"github.com/lastcall/lastcall/test/tools"
)

// planNow pins the clock of the plans made in this process, so that their
// tables do not change from run to run.
var planNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// A node with one pod of each kind of blocker: the plan names each, in
// its table and its JSON, and exits 1 since a 300 s grace does not fit
// in 2 minutes (nor, under respect, does a budget that allows nothing).
func TestPlanBlockers(t *testing.T) {
	ns := newNamespace(t)
	node := newNode(t, "plan", nil)
	on := map[string]string{"kubernetes.io/hostname": node}
	// A Deployment "api" whose budget allows no disruption (minAvailable =
	// replicas), computed by the controller-manager.
	guardedPod(t, ns, node, on)
	// A Deployment behind a Service, with no preStop hook.
	create(t, deployment(ns, "web", 1, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	create(t, planService(ns, "web"), env.Client.CoreV1().Services(ns).Create)
	// A pod no controller recreates.
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns}, Spec: podTemplate(map[string]string{"app": "bare"}, on, 30).Spec}
	create(t, bare, env.Client.CoreV1().Pods(ns).Create)
	// A pod with emptyDir data.
	cache := deployment(ns, "cache", 1, on, 30)
	cache.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	create(t, cache, env.Client.AppsV1().Deployments(ns).Create)
	// A pod asking for more grace than the deadline leaves.
	create(t, deployment(ns, "slow", 1, on, 300), env.Client.AppsV1().Deployments(ns).Create)
	// A DaemonSet pod, left alone.
	create(t, daemonSet(ns, "logs", on), env.Client.AppsV1().DaemonSets(ns).Create)
	// A critical pod, evicted after the others.
	crit := deployment("kube-system", "crit-"+node, 1, on, 30)
	crit.Spec.Template.Spec.PriorityClassName = "system-cluster-critical"
	create(t, crit, env.Client.AppsV1().Deployments("kube-system").Create)
	t.Cleanup(func() {
		env.Client.AppsV1().Deployments("kube-system").Delete(context.Background(), crit.Name, metav1.DeleteOptions{})
	})
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, node)) == 6 })
	waitPods(t, "kube-system", func(p []*corev1.Pod) bool { return countReady(onNode(p, node)) == 1 })

	code, p := planJSON(t, "--node", node, "-o", "json", "--deadline", "2m")
	if code != plancmd.ExitNoFit || p.Fits {
		t.Errorf("exit %d, fits %v; want 1 and false", code, p.Fits)
	}
	normalizePlan(&p, ns, node)
	want := map[string][]plan.Reason{
		"NS/api-<hash>-<id>":                {plan.ReasonPDB},
		"NS/bare":                           {plan.ReasonNoController},
		"NS/cache-<hash>-<id>":              {plan.ReasonEmptyDir},
		"NS/slow-<hash>-<id>":               {plan.ReasonGraceTooLong},
		"NS/web-<hash>-<id>":                {plan.ReasonNoPreStop, plan.ReasonOnlyEndpoint}, // a single replica
		"kube-system/crit-NODE-<hash>-<id>": {},                                              // the non-critical group is gone 30 s early, leaving it its grace
	}
	if got := reasonsOf(p); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("blockers:\n got %v\nwant %v", got, want)
	}
	if len(p.Budgets) != 1 || p.Budgets[0].Name != "api" {
		t.Errorf("blocking budgets %+v, want api", p.Budgets)
	}
	if !slices.Contains(p.Skipped, plan.Skipped{Namespace: "NS", Name: "logs-<id>", Rule: "daemonset"}) {
		t.Errorf("skipped %+v: want the DaemonSet pod", p.Skipped)
	}
	if !slices.ContainsFunc(p.Problems, func(s string) bool { return strings.HasPrefix(s, "pod NS/slow-<hash>-<id> asks for 5m0s") }) {
		t.Errorf("problems %q: want slow's grace", p.Problems)
	}
	var table bytes.Buffer
	if err := render.Table(&table, p); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "plan", "blockers.golden"), table.String())

	// Under respect, the budget is a problem of its own.
	code, p = planJSON(t, "--node", node, "-o", "json", "--pdb-deadline-policy", "respect")
	if code != plancmd.ExitNoFit || !slices.ContainsFunc(p.Problems, func(s string) bool {
		return strings.Contains(s, "is blocked by its PodDisruptionBudget and the policy is respect")
	}) {
		t.Errorf("respect: exit %d, problems %q", code, p.Problems)
	}

	// The binary, on the real clock, through a kubeconfig.
	bin := buildLastcall(t)
	code, out, stderr := runLastcall(t, bin, nil, "plan", "--node", node, "--kubeconfig", env.Kubeconfig)
	if code != plancmd.ExitNoFit || !strings.Contains(out, "Node:                     "+node) || !strings.Contains(out, ": does NOT fit") {
		t.Errorf("lastcall plan: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if code, _, stderr := runLastcall(t, bin, nil, "plan", "--node", node+"-gone", "--kubeconfig", env.Kubeconfig); code != plancmd.ExitUsage ||
		!strings.Contains(stderr, "node not found") {
		t.Errorf("lastcall plan of a missing node: exit %d, stderr %q", code, stderr)
	}
}

// A pod whose budget allows no disruption fits under graceful-override
// (deleted anyway at the last moment it can still shut down gracefully),
// and not under respect.
func TestPlanBudgetPolicy(t *testing.T) {
	ns := newNamespace(t)
	node := newNode(t, "plan", nil)
	pod := guardedPod(t, ns, node, map[string]string{"kubernetes.io/hostname": node})

	code, p := planJSON(t, "--node", node, "-o", "json")
	if code != plancmd.ExitFits || !p.Fits || len(p.Groups) != 1 || len(p.Groups[0].Pods) != 1 {
		t.Fatalf("graceful-override: exit %d, plan %+v", code, p)
	}
	got := p.Groups[0].Pods[0]
	if got.Name != pod.Name || got.OverrideAt == nil || !got.OverrideAt.Equal(planNow.Add(85*time.Second)) {
		t.Errorf("pod %+v: want %s overridden at now+85s (30 s of grace before the deadline less 5 s)", got, pod.Name)
	}
	code, p = planJSON(t, "--node", node, "-o", "json", "--pdb-deadline-policy=respect")
	if code != plancmd.ExitNoFit || len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "blocked by its PodDisruptionBudget") {
		t.Errorf("respect: exit %d, problems %q", code, p.Problems)
	}
}

// A node that drains cleanly: one pod with a preStop hook behind its
// Service, which has a ready endpoint on another node too, its budget
// allowing a disruption.
func TestPlanCleanNode(t *testing.T) {
	ns := newNamespace(t)
	node := newNode(t, "plan", nil)
	other := newNode(t, "plan-other", nil)
	create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-elsewhere", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: other, Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}}},
		env.Client.CoreV1().Pods(ns).Create)
	on := map[string]string{"kubernetes.io/hostname": node}
	web := deployment(ns, "web", 1, on, 30)
	web.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
	create(t, web, env.Client.AppsV1().Deployments(ns).Create)
	create(t, planService(ns, "web"), env.Client.CoreV1().Services(ns).Create)
	create(t, pdb(ns, "web", 0), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		return countReady(onNode(p, node)) == 1 && countReady(onNode(p, other)) == 1
	})
	eventually(t, "the PDB to allow a disruption", func() bool {
		b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "web", metav1.GetOptions{})
		return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.DisruptionsAllowed >= 1
	})

	for _, policy := range []string{"graceful-override", "respect"} {
		code, p := planJSON(t, "--node", node, "-o", "json", "--pdb-deadline-policy", policy)
		if code != plancmd.ExitFits || !p.Fits || len(p.Problems) != 0 || len(p.Budgets) != 0 {
			t.Errorf("%s: exit %d, plan %+v", policy, code, p)
		}
		if got := reasonsOf(p); len(got) != 1 || slices.ContainsFunc(slices.Collect(maps.Values(got)), func(r []plan.Reason) bool { return len(r) > 0 }) {
			t.Errorf("%s: blockers %v, want one pod with none", policy, got)
		}
	}

	// The binary, on the real clock, through $KUBECONFIG.
	code, out, stderr := runLastcall(t, buildLastcall(t), []string{"KUBECONFIG=" + env.Kubeconfig}, "plan", "--node", node)
	if code != plancmd.ExitFits || !strings.Contains(out, ": fits") {
		t.Errorf("lastcall plan: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
}

func planService(ns, app string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// planJSON runs lastcall plan in this process, on the pinned clock, and
// parses its JSON.
func planJSON(t *testing.T, args ...string) (int, plan.Plan) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	code := plancmd.Command(ctx, args, plancmd.Env{Client: env.Client, Now: planNow}, &stdout, &stderr,
		func(string) (string, bool) { return "", false })
	var p plan.Plan
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatalf("lastcall plan %v: exit %d, output not a plan: %v\nstdout:\n%s\nstderr:\n%s", args, code, err, stdout.String(), stderr.String())
	}
	return code, p
}

// shipped is the binary buildLastcall builds once for the package's tests.
var shipped struct {
	once sync.Once
	path string
	err  error
}

// buildLastcall builds cmd/lastcall as shipped, once for all the package's
// tests, into the cluster's directory, and returns its path.
func buildLastcall(t *testing.T) string {
	t.Helper()
	shipped.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		shipped.path, shipped.err = agentproc.Build(ctx, env.Dir)
	})
	if shipped.err != nil {
		t.Fatal(shipped.err)
	}
	return shipped.path
}

// runLastcall runs the binary bin with args and the environment environ
// only.
func runLastcall(t *testing.T, bin string, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{}, environ...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running lastcall %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// normalizePlan replaces what changes from run to run: the namespace (NS),
// the node (NODE), and the random suffixes of the pods of ReplicaSets
// (-<hash>-<id>) and DaemonSets (-<id>).
func normalizePlan(p *plan.Plan, ns, node string) {
	names := map[string]string{}
	rename := func(name, kind string) string {
		suffix := map[string]string{"ReplicaSet": "-<hash>-<id>", "DaemonSet": "-<id>"}[kind]
		base := name
		for range strings.Count(suffix, "<") {
			base = base[:max(0, strings.LastIndex(base, "-"))]
		}
		out := strings.ReplaceAll(base, node, "NODE") + suffix
		names[name] = out
		return out
	}
	namespace := func(s string) string {
		if s == ns {
			return "NS"
		}
		return s
	}
	p.Node = "NODE"
	for gi := range p.Groups {
		for pi := range p.Groups[gi].Pods {
			pod := &p.Groups[gi].Pods[pi]
			pod.Namespace, pod.Name = namespace(pod.Namespace), rename(pod.Name, pod.Controller)
		}
	}
	for i := range p.Skipped {
		s := &p.Skipped[i]
		kind := ""
		if s.Rule == "daemonset" {
			kind = "DaemonSet"
		}
		s.Namespace, s.Name = namespace(s.Namespace), rename(s.Name, kind)
	}
	for i := range p.Budgets {
		b := &p.Budgets[i]
		b.Namespace = namespace(b.Namespace)
		for j, pod := range b.Pods {
			b.Pods[j] = names[pod]
		}
	}
	for i, s := range p.Problems {
		for old, n := range names {
			s = strings.ReplaceAll(s, old, n)
		}
		p.Problems[i] = strings.ReplaceAll(strings.ReplaceAll(s, ns+"/", "NS/"), node, "NODE")
	}
}

// reasonsOf maps namespace/name to the reasons of the pod's blockers.
func reasonsOf(p plan.Plan) map[string][]plan.Reason {
	out := map[string][]plan.Reason{}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			rs := []plan.Reason{}
			for _, b := range pod.Blockers {
				rs = append(rs, b.Reason)
			}
			out[pod.Namespace+"/"+pod.Name] = rs
		}
	}
	return out
}

// lastcall plan as a kubectl plugin: kubectl, the real one, finds
// kubectl-lastcall on the PATH, and "kubectl lastcall plan" plans the node
// with kubectl's client configuration ($KUBECONFIG here) and --context,
// exiting as lastcall plan does.
func TestPlanAsKubectlPlugin(t *testing.T) {
	ns := newNamespace(t)
	node := newNode(t, "plugin", nil)
	on := map[string]string{"kubernetes.io/hostname": node}
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns}, Spec: podTemplate(map[string]string{"app": "bare"}, on, 30).Spec}
	create(t, bare, env.Client.CoreV1().Pods(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, node)) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kubectl, err := tools.Binary(ctx, tools.Kubernetes, "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "kubectl-lastcall"), "./cmd/kubectl-lastcall")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-lastcall: %v\n%s", err, out)
	}
	kc, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	raw, err := os.ReadFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// No $KUBECONFIG: kubectl and its plugin both fall back to
	// ~/.kube/config.
	environ := []string{"PATH=" + dir, "HOME=" + home}

	code, out, stderr := runLastcall(t, kubectl, environ, "lastcall", "plan", node, "--context", kc.CurrentContext)
	if code != plancmd.ExitFits || !strings.Contains(out, "Node:                     "+node) || !strings.Contains(out, string(plan.ReasonNoController)) ||
		strings.Contains(out, "KUBECTL DRAIN") {
		t.Errorf("kubectl lastcall plan: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	// -o wide: what kubectl drain would do beside what lastcall does.
	code, out, stderr = runLastcall(t, kubectl, environ, "lastcall", "plan", node, "-o", "wide")
	if code != plancmd.ExitFits || !strings.Contains(out, "OVERRIDE AT") || !strings.Contains(out, "KUBECTL DRAIN") ||
		!strings.Contains(out, "refuse: Pods that declare no controller (use --force to override)") ||
		!strings.Contains(out, "refuses the node: cannot delete Pods that declare no controller (use --force to override): "+ns+"/bare") {
		t.Errorf("kubectl lastcall plan -o wide: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	// -o yaml, and --node as lastcall plan takes it.
	code, out, stderr = runLastcall(t, kubectl, environ, "lastcall", "plan", "--node", node, "-o", "yaml", "--kubeconfig", env.Kubeconfig)
	var p plan.Plan
	if err := yaml.Unmarshal([]byte(out), &p); err != nil || code != plancmd.ExitFits || p.Node != node || p.KubectlDrain == nil ||
		len(p.Groups) != 1 || p.Groups[0].Pods[0].KubectlDrain == "" {
		t.Errorf("kubectl lastcall plan -o yaml: exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, stderr)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"plan", node, "--context", "no-such-context"}, plancmd.ExitCluster, "no-such-context"},
		{[]string{"plan", node, "other"}, plancmd.ExitUsage, "one node at a time"},
		{[]string{"plan", node, "--node", "other"}, plancmd.ExitUsage, "two nodes"},
		{[]string{"plan"}, plancmd.ExitUsage, "--node: required"},
		{[]string{"plan", "no-such-node"}, plancmd.ExitUsage, "node not found"},
		{[]string{"plan", node, "-o", "xml"}, plancmd.ExitUsage, "--output"},
		{[]string{"explain"}, plancmd.ExitUsage, "Usage: kubectl lastcall plan NODE"},
	} {
		if code, _, stderr := runLastcall(t, kubectl, environ, append([]string{"lastcall"}, tc.args...)...); code != tc.code || !strings.Contains(stderr, tc.says) {
			t.Errorf("kubectl lastcall %v: exit %d, stderr %q; want %d, %q", tc.args, code, stderr, tc.code, tc.says)
		}
	}
}

// A Service of type LoadBalancer sends through every node
// (externalTrafficPolicy Cluster): with no --lb-deregistration-delay, the
// plan names it as the node's blocker, since a drain's end may release the
// instance while the balancer still sends it connections; with a delay,
// or for a Local Service with no endpoint on the node, nothing.
func TestPlanNodeBehindALoadBalancer(t *testing.T) {
	ns := newNamespace(t)
	node := newNode(t, "plan-lb", nil)
	for _, s := range []struct {
		name   string
		policy corev1.ServiceExternalTrafficPolicy
	}{{"through-every-node", corev1.ServiceExternalTrafficPolicyCluster}, {"local-elsewhere", corev1.ServiceExternalTrafficPolicyLocal}} {
		svc := planService(ns, s.name)
		svc.Spec.Type, svc.Spec.ExternalTrafficPolicy = corev1.ServiceTypeLoadBalancer, s.policy
		create(t, svc, env.Client.CoreV1().Services(ns).Create)
		t.Cleanup(func() { // before any later test plans a node
			_ = env.Client.CoreV1().Services(ns).Delete(context.Background(), s.name, metav1.DeleteOptions{})
		})
	}

	_, p := planJSON(t, "--node", node, "-o", "json")
	if len(p.NodeBlockers) != 1 || p.NodeBlockers[0].Reason != plan.ReasonLBNoDelay ||
		!strings.Contains(p.NodeBlockers[0].Detail, ns+"/through-every-node") {
		t.Errorf("node blockers %+v, want %s naming %s/through-every-node only", p.NodeBlockers, plan.ReasonLBNoDelay, ns)
	}
	var table, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	plancmd.Command(ctx, []string{"--node", node}, plancmd.Env{Client: env.Client, Now: planNow}, &table, &stderr,
		func(string) (string, bool) { return "", false })
	if !strings.Contains(table.String(), "The node as a whole") || !strings.Contains(table.String(), string(plan.ReasonLBNoDelay)) {
		t.Errorf("table names no node blocker:\n%s\n%s", table.String(), stderr.String())
	}

	if _, p := planJSON(t, "--node", node, "-o", "json", "--lb-deregistration-delay", "5s"); len(p.NodeBlockers) != 0 || p.LBDelay != plan.Seconds(5*time.Second) {
		t.Errorf("with a 5s delay: node blockers %+v, delay %v; want none, 5s", p.NodeBlockers, p.LBDelay)
	}
}
