// Command demo runs lastcall's main job end to end on a local control plane:
// a spot interruption notice appears in amazon-ec2-metadata-mock, and the
// lastcall node agent taints, cordons and drains its node while a
// PodDisruptionBudget keeps the service up. It prints what happens, step by
// step, with timings.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/tools"
)

const (
	namespace = "shop"
	victim    = "demo-worker-1"
	noticeIn  = 5 * time.Second
)

var start = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fmt.Println("lastcall demo: a spot interruption notice drains a node of a local Kubernetes control plane")
	fmt.Println()
	root, err := tools.RepoRoot()
	if err != nil {
		return err
	}
	bin, err := agentproc.Build(ctx, filepath.Join(root, "bin"))
	if err != nil {
		return err
	}
	say("built %s", bin)

	c, err := cluster.Start(ctx)
	if err != nil {
		return err
	}
	defer c.Stop()
	say("control plane up in %.1fs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (kubeconfig %s)",
		c.StartupTime.Seconds(), c.Kubeconfig)

	for _, n := range []string{victim, "demo-worker-2", "demo-worker-3"} {
		if _, err := c.AddNode(ctx, n, cluster.WithLabels(map[string]string{"pool": "web"}),
			cluster.WithProviderID("aws:///us-east-1a/i-0demo"+n[len(n)-1:])); err != nil {
			return err
		}
	}
	say("3 kwok nodes Ready: %s, demo-worker-2, demo-worker-3", victim)

	if err := deployWorkload(ctx, c); err != nil {
		return err
	}
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + victim})
	if err != nil {
		return err
	}
	say("workload Ready: Deployment web (6 replicas, PodDisruptionBudget minAvailable 5) and DaemonSet node-logs; %d pods on %s",
		len(pods.Items), victim)

	trigger := aemm.TriggerAfter(noticeIn)
	deadline := trigger.Add(2 * time.Minute)
	imds, err := aemm.Start(ctx, aemm.Config{
		InstanceID: "i-0demo1", MockTriggerTime: trigger, SpotTime: deadline,
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never,
		Events: &aemm.ScheduledEvent{State: "completed"},
	})
	if err != nil {
		return err
	}
	defer imds.Stop()
	say("amazon-ec2-metadata-mock at %s: a spot 'terminate' notice appears at %s, the instance goes at %s",
		imds.URL(), trigger.Format("15:04:05"), deadline.Format("15:04:05"))

	agent, err := agentproc.Start(ctx, agentproc.Config{Binary: bin, Node: victim, Kubeconfig: c.Kubeconfig,
		IMDS: imds.URL(), LogPath: filepath.Join(c.Dir, "logs", "lastcall.log")})
	if err != nil {
		return err
	}
	defer agent.Stop()
	metricsAddr := agent.Addr
	say("lastcall agent started for %s (pid %d, metrics on http://%s/metrics, log %s)", victim, agent.PID(), metricsAddr, agent.LogPath)

	if err := narrate(ctx, c, trigger, deadline); err != nil {
		return err
	}
	fmt.Println()
	return summary(ctx, c, metricsAddr)
}

func deployWorkload(ctx context.Context, c *cluster.Cluster) error {
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	labels := map[string]string{"app": "web"}
	replicas, grace := int32(6), int64(30)
	spec := corev1.PodSpec{
		NodeSelector:                  map[string]string{"pool": "web"},
		TerminationGracePeriodSeconds: &grace,
		Containers:                    []corev1.Container{{Name: "web", Image: "registry.example/web:1"}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
		}},
	}
	if _, err := c.Client.AppsV1().Deployments(namespace).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	min := intstr.FromInt32(5)
	if _, err := c.Client.PolicyV1().PodDisruptionBudgets(namespace).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &min, Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	dsLabels := map[string]string{"app": "node-logs"}
	if _, err := c.Client.AppsV1().DaemonSets(namespace).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-logs"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: dsLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dsLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "logs", Image: "registry.example/logs:1"}}}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return c.WaitPodsReady(ctx, namespace, "app=web", 6)
}

// narrate watches the node, the pods and the Events and prints each step
// until the node is drained.
func narrate(ctx context.Context, c *cluster.Cluster, trigger, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nodes, err := c.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", victim).String()})
	if err != nil {
		return err
	}
	defer nodes.Stop()
	pods, err := c.Client.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	defer pods.Stop()
	events, err := c.Client.CoreV1().Events("").Watch(ctx, metav1.ListOptions{FieldSelector: "source=lastcall"})
	if err != nil {
		return err
	}
	defer events.Stop()

	noticeShown, cordoned := false, false
	var cordonedAt time.Time
	since := func() string { return fmt.Sprintf("%.3fs after the notice", time.Since(trigger).Seconds()) }
	noticeTimer := time.NewTimer(time.Until(trigger))
	defer noticeTimer.Stop()
	terminating := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return errors.New("the node was not drained before the deadline")
		case <-noticeTimer.C:
			noticeShown = true
			say("the spot interruption notice is now in instance metadata (spot/instance-action)")
		case ev, ok := <-nodes.ResultChan():
			if !ok {
				return errors.New("node watch closed")
			}
			n, _ := ev.Object.(*corev1.Node)
			if n == nil {
				continue
			}
			if !cordoned && n.Spec.Unschedulable {
				cordoned, cordonedAt = true, time.Now()
				if !noticeShown {
					noticeShown = true
				}
				say("node %s tainted %s:NoSchedule, cordoned, labelled %s (%s)",
					victim, node.TaintKey("spot-interruption"), node.LabelExcludeLB, since())
			}
			st, _ := node.StateOf(n)
			for _, h := range st.Holds {
				if h.Drain != "" {
					say("lastcall reports the drain done: %s, %.3fs after cordoning, %s before the deadline",
						h.Drain, time.Since(cordonedAt).Seconds(), time.Until(deadline).Round(time.Second))
					return nil
				}
			}
		case ev, ok := <-pods.ResultChan():
			if !ok {
				return errors.New("pod watch closed")
			}
			p, _ := ev.Object.(*corev1.Pod)
			if p == nil {
				continue
			}
			switch {
			case p.Spec.NodeName == victim && p.DeletionTimestamp != nil && !terminating[p.Name]:
				terminating[p.Name] = true
				say("pod %s is terminating (evicted, grace %ds)", p.Name, ptr(p.DeletionGracePeriodSeconds))
			case ev.Type == watch.Deleted && p.Spec.NodeName == victim:
				say("pod %s is gone from %s", p.Name, victim)
			case ev.Type == watch.Modified && p.Spec.NodeName != victim && p.Spec.NodeName != "" && cordoned && isReady(p) && !terminating["ready/"+p.Name]:
				terminating["ready/"+p.Name] = true
				say("replacement %s Ready on %s", p.Name, p.Spec.NodeName)
			}
		case ev, ok := <-events.ResultChan():
			if !ok {
				return errors.New("event watch closed")
			}
			e, _ := ev.Object.(*corev1.Event)
			if e == nil || ev.Type != watch.Added {
				continue
			}
			say("Event %s/%s %s: %s", strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, e.Reason, firstLine(e.Message))
		}
	}
}

func summary(ctx context.Context, c *cluster.Cluster, metricsAddr string) error {
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	per := map[string][]string{}
	for _, p := range pods.Items {
		per[p.Spec.NodeName] = append(per[p.Spec.NodeName], p.Name)
	}
	fmt.Println("pods per node now:")
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-14s %s\n", n, strings.Join(per[n], " "))
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println("lastcall metrics (excerpt):")
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "lastcall_") && !strings.Contains(l, "_bucket{") && !strings.HasPrefix(l, "lastcall_build_info") {
			fmt.Println("  " + l)
		}
	}
	return nil
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptr(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
