package cluster_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lastcall/lastcall/test/cluster"
)

// c is the package's cluster, started once by TestMain.
var c *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &c)) }

// testTimeout bounds each test's work on the cluster.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestAddNodeBecomesReady(t *testing.T) {
	ctx := testContext(t)
	taint := corev1.Taint{Key: "example.com/dedicated", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	begin := time.Now()
	node, err := c.AddNode(ctx, "ready-node",
		cluster.WithLabels(map[string]string{"topology.kubernetes.io/zone": "us-east-1a"}),
		cluster.WithProviderID("aws:///us-east-1a/i-0123456789abcdef0"),
		cluster.WithTaints(taint))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node Ready and schedulable after %s", time.Since(begin))

	if !cluster.NodeSchedulable(node) {
		t.Errorf("AddNode returned a node that is not Ready or still tainted: %+v", node.Status.Conditions)
	}
	for k, want := range map[string]string{
		"type":                        "kwok",
		"kubernetes.io/hostname":      "ready-node",
		"topology.kubernetes.io/zone": "us-east-1a",
	} {
		if got := node.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if got := node.Annotations["kwok.x-k8s.io/node"]; got != "fake" {
		t.Errorf("annotation kwok.x-k8s.io/node = %q, want fake", got)
	}
	if node.Spec.ProviderID != "aws:///us-east-1a/i-0123456789abcdef0" {
		t.Errorf("providerID = %q", node.Spec.ProviderID)
	}
	if !hasTaint(node, taint.Key) {
		t.Errorf("taint %s lost: %v", taint.Key, node.Spec.Taints)
	}
}

func TestDaemonSetPodsOnKwokNodes(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(ctx, t, "ds")
	labels := map[string]string{"lastcall.test/pool": "ds"}
	for _, name := range []string{"ds-node-a", "ds-node-b"} {
		if _, err := c.AddNode(ctx, name, cluster.WithLabels(labels)); err != nil {
			t.Fatal(err)
		}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: podTemplate("agent", labels),
		},
	}
	if _, err := c.Client.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodsReady(ctx, ns, "app=agent", 2); err != nil {
		t.Fatal(err)
	}
	pods := readyPods(ctx, t, ns, "app=agent")
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
	}
	if !nodes["ds-node-a"] || !nodes["ds-node-b"] {
		t.Errorf("DaemonSet pods run on %v, want ds-node-a and ds-node-b", nodes)
	}
}

// TestEvictionRespectsPDB checks what a drain relies on: PDB status computed
// by the controller-manager, eviction through policy/v1, evicted pods
// removed by kwok, and replacements made Ready.
func TestEvictionRespectsPDB(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(ctx, t, "pdb")
	for _, name := range []string{"pdb-node-a", "pdb-node-b"} {
		if _, err := c.AddNode(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	createDeployment(ctx, t, ns, "web", 3)
	createPDB(ctx, t, ns, "web", 2)

	begin := time.Now()
	if err := c.WaitPodsReady(ctx, ns, "app=web", 3); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 pods Running and Ready after %s", time.Since(begin))
	pods := readyPods(ctx, t, ns, "app=web")
	for _, p := range pods {
		checkOnKwokNode(ctx, t, p)
	}
	waitPDB(ctx, t, ns, "web", 3, 1)

	// The first eviction is allowed, and the eviction API itself lowers
	// disruptionsAllowed to 0.
	if err := evict(ctx, pods[0]); err != nil {
		t.Fatalf("first eviction: %v", err)
	}
	// The second one, right after, is refused while the replacement is not
	// Ready yet, or allowed if it already is: only those two outcomes.
	second := evict(ctx, pods[1])
	switch {
	case second == nil:
		t.Log("second eviction allowed: the replacement was already Ready")
	case apierrors.IsTooManyRequests(second):
		t.Logf("second eviction refused as expected: %v", second)
		if !strings.Contains(second.Error(), "disruption budget") {
			t.Errorf("429 for another reason than the PDB: %v", second)
		}
	default:
		t.Fatalf("second eviction: %v, want success or 429", second)
	}

	begin = time.Now()
	waitPodGone(ctx, t, pods[0])
	t.Logf("evicted pod gone after %s", time.Since(begin))

	if apierrors.IsTooManyRequests(second) {
		// Once the replacement is Ready, the controller allows one
		// disruption again and the retried eviction succeeds.
		if err := c.WaitPodsReady(ctx, ns, "app=web", 3); err != nil {
			t.Fatal(err)
		}
		waitPDB(ctx, t, ns, "web", 3, 1)
		if err := evict(ctx, pods[1]); err != nil {
			t.Fatalf("retried eviction: %v", err)
		}
	}
	waitPodGone(ctx, t, pods[1])
	if err := c.WaitPodsReady(ctx, ns, "app=web", 3); err != nil {
		t.Fatal(err)
	}
	waitPDB(ctx, t, ns, "web", 3, 1)
}

// TestEvictionBlockedByPDB checks the deterministic refusal: a PDB that
// allows no disruption answers every eviction with 429 and the pod stays.
func TestEvictionBlockedByPDB(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(ctx, t, "blocked")
	if _, err := c.AddNode(ctx, "blocked-node"); err != nil {
		t.Fatal(err)
	}
	createDeployment(ctx, t, ns, "db", 2)
	createPDB(ctx, t, ns, "db", 2)
	if err := c.WaitPodsReady(ctx, ns, "app=db", 2); err != nil {
		t.Fatal(err)
	}
	waitPDB(ctx, t, ns, "db", 2, 0)

	pod := readyPods(ctx, t, ns, "app=db")[0]
	err := evict(ctx, pod)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("eviction under a PDB allowing 0 disruptions: %v, want 429", err)
	}
	got, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.DeletionTimestamp != nil {
		t.Errorf("pod %s is being deleted after a refused eviction", pod.Name)
	}
}

// TestSlowReadyLabel checks kwok's two pod-ready stages: a pod labelled
// cluster.SlowReadyLabel becomes Ready no sooner than SlowReadyDelay after
// it was created, while a pod without the label, created at the same time,
// is Ready at once, before it.
func TestSlowReadyLabel(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(ctx, t, "slow")
	if _, err := c.AddNode(ctx, "slow-node"); err != nil {
		t.Fatal(err)
	}
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"kubernetes.io/hostname": "slow-node"},
				Containers:   []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
	}
	begin := time.Now() // before either pod exists
	for _, p := range []*corev1.Pod{pod("slow", map[string]string{cluster.SlowReadyLabel: "true"}), pod("fast", nil)} {
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ready := map[string]time.Time{}
	var order []string
	for len(ready) < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("Ready so far: %v: %v", order, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended; Ready so far: %v", order)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || !cluster.PodReady(p) {
				continue
			}
			if _, seen := ready[p.Name]; !seen {
				ready[p.Name] = time.Now()
				order = append(order, p.Name)
			}
		}
	}
	t.Logf("after the creates began: fast Ready at %s, slow at %s",
		ready["fast"].Sub(begin).Round(time.Millisecond), ready["slow"].Sub(begin).Round(time.Millisecond))
	if order[0] != "fast" {
		t.Errorf("pods became Ready in the order %v: the unlabelled pod should be Ready first, at once", order)
	}
	if took := ready["slow"].Sub(begin); took < cluster.SlowReadyDelay {
		t.Errorf("labelled pod Ready %s after its creation began, want at least %s", took, cluster.SlowReadyDelay)
	}
}

// TestServedLabel checks that kwok leaves a pod labelled cluster.ServedLabel
// alone: a pod without the label, created after it on the same node, is
// made Ready (with a pod IP from cluster.KwokPodCIDR) and, once deleted, is
// removed, while the labelled pod stays Pending, then Terminating.
func TestServedLabel(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(ctx, t, "served")
	if _, err := c.AddNode(ctx, "served-node"); err != nil {
		t.Fatal(err)
	}
	pods := c.Client.CoreV1().Pods(ns)
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:   "served-node",
				Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
	}
	served, err := pods.Create(ctx, pod("served", map[string]string{cluster.ServedLabel: "x"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := pods.Create(ctx, pod("plain", map[string]string{"app": "plain"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodsReady(ctx, ns, "app=plain", 1); err != nil {
		t.Fatal(err)
	}
	got, err := pods.Get(ctx, plain.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix(cluster.KwokPodCIDR)
	if ip, err := netip.ParseAddr(got.Status.PodIP); err != nil || !cidr.Contains(ip) {
		t.Errorf("pod IP %q of an unlabelled pod, want one in %s", got.Status.PodIP, cidr)
	}

	for _, p := range []*corev1.Pod{served, plain} {
		if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPodGone(ctx, t, *plain)
	got, err = pods.Get(ctx, served.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("labelled pod: %v", err)
	}
	if got.Status.Phase != corev1.PodPending || got.DeletionTimestamp == nil {
		t.Errorf("labelled pod: phase %s, deletionTimestamp %v; want Pending and being deleted, untouched by kwok",
			got.Status.Phase, got.DeletionTimestamp)
	}
	zero := int64(0)
	if err := pods.Delete(ctx, served.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
}

func TestKubeconfigWorksWithKubectl(t *testing.T) {
	ctx := testContext(t)
	out, err := runKubectl(ctx, "get", "--raw", "/readyz")
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != "ok" {
		t.Errorf("kubectl get --raw /readyz = %q", out)
	}
}

// TestRestartAPIServer runs after the others: it restarts kube-apiserver and
// checks that the client, the controller-manager and kwok carry on.
func TestRestartAPIServer(t *testing.T) {
	ctx := testContext(t)
	oldPID := c.PID(cluster.APIServer)
	begin := time.Now()
	if err := c.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restarted in %s", time.Since(begin))
	if pid := c.PID(cluster.APIServer); pid == 0 || pid == oldPID {
		t.Errorf("PID after restart = %d, before %d", pid, oldPID)
	}
	ns := createNamespace(ctx, t, "restart")
	if _, err := c.AddNode(ctx, "after-restart"); err != nil {
		t.Fatal(err)
	}
	createDeployment(ctx, t, ns, "again", 1)
	if err := c.WaitPodsReady(ctx, ns, "app=again", 1); err != nil {
		t.Fatal(err)
	}
}

// TestStartStop starts a second cluster, which shows the warm start-up
// time, and checks that Stop ends every process, removes Dir and can be
// called again.
func TestStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second cluster")
	}
	ctx := testContext(t)
	other, err := cluster.Start(ctx, cluster.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm start: %s (binaries %s)", other.StartupTime, other.BuildTime)
	components := []string{cluster.Etcd, cluster.APIServer, cluster.ControllerManager, cluster.Scheduler, cluster.Kwok}
	pids := map[string]int{}
	for _, name := range components {
		if pids[name] = other.PID(name); pids[name] == 0 {
			t.Errorf("%s not running", name)
		}
	}
	begin := time.Now()
	other.Stop()
	t.Logf("stopped in %s", time.Since(begin))
	other.Stop()
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Stop: %v", name, pid, err)
		}
	}
	if _, err := os.Stat(other.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Stop: %v", other.Dir, err)
	}
}

// TestStartFailureNamesComponent checks the error of a start that cannot
// finish in time, and that it leaves nothing behind.
func TestStartFailureNamesComponent(t *testing.T) {
	parent := t.TempDir()
	_, err := cluster.Start(testContext(t), cluster.WithStartTimeout(time.Millisecond), cluster.WithParentDir(parent))
	if err == nil {
		t.Fatal("Start succeeded within 1ms")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"starting etcd", "etcd.log", "not up within"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed Start left %v in %s", entries, parent)
	}
}

func createNamespace(ctx context.Context, t *testing.T, prefix string) string {
	t.Helper()
	ns, err := c.CreateNamespace(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func podTemplate(app string, nodeSelector map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeSelector: nodeSelector,
			Containers:   []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

func createDeployment(ctx context.Context, t *testing.T, ns, app string, replicas int32) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: podTemplate(app, map[string]string{"type": "kwok"}),
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createPDB(ctx context.Context, t *testing.T, ns, app string, minAvailable int32) {
	t.Helper()
	floor := intstr.FromInt32(minAvailable)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: app},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &floor,
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		},
	}
	if _, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPDB waits until the disruption controller has computed the PDB's
// status for its current generation with these numbers.
func waitPDB(ctx context.Context, t *testing.T, ns, name string, healthy, allowed int32) {
	t.Helper()
	var last policyv1.PodDisruptionBudgetStatus
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = pdb.Status
		return pdb.Status.ObservedGeneration == pdb.Generation &&
			last.CurrentHealthy == healthy && last.ExpectedPods == healthy &&
			last.DisruptionsAllowed == allowed, nil
	})
	if err != nil {
		t.Fatalf("PDB %s/%s: want %d healthy and %d disruptions allowed, last status %+v: %v",
			ns, name, healthy, allowed, last, err)
	}
}

// evict makes one eviction request, without client-go's retries on 429.
func evict(ctx context.Context, pod corev1.Pod) error {
	eviction := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	}
	return c.Client.PolicyV1().RESTClient().Post().AbsPath("/api/v1").
		Namespace(pod.Namespace).Resource("pods").Name(pod.Name).SubResource("eviction").
		Body(eviction).MaxRetries(0).Do(ctx).Error()
}

func readyPods(ctx context.Context, t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		if cluster.PodReady(&p) {
			ready = append(ready, p)
		}
	}
	return ready
}

func checkOnKwokNode(ctx context.Context, t *testing.T, pod corev1.Pod) {
	t.Helper()
	node, err := c.Client.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node of pod %s: %v", pod.Name, err)
	}
	if node.Labels["type"] != "kwok" {
		t.Errorf("pod %s runs on %s, not a kwok node", pod.Name, node.Name)
	}
}

// waitPodGone waits until the pod (this UID) no longer exists.
func waitPodGone(ctx context.Context, t *testing.T, pod corev1.Pod) {
	t.Helper()
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && got.UID != pod.UID, err
	})
	if err != nil {
		t.Fatalf("pod %s/%s still there: %v", pod.Namespace, pod.Name, err)
	}
}

func hasTaint(node *corev1.Node, key string) bool {
	for _, taint := range node.Spec.Taints {
		if taint.Key == key {
			return true
		}
	}
	return false
}

func runKubectl(ctx context.Context, args ...string) (string, error) {
	out, err := c.KubectlCommand(ctx, args...).CombinedOutput()
	return string(out), err
}
