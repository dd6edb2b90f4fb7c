package e2e

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/serving"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
	"github.com/lastcall/lastcall/test/traffic"
)

// gceWindow is a GCE preemption's notice: the node dies this long after it.
const gceWindow = 30 * time.Second

// trafficScenario is one run of HTTP load through a node's drain: a
// Deployment of 3 replicas, one on each of 3 nodes, behind a Service, a
// PodDisruptionBudget (minAvailable 2) and a pod-level balancer that
// applies endpoint changes after propagation. Load runs at rate; the
// doomed node gets a GCE preemption, lastcall's agent drains it, and the
// node dies at the end of the window, its servers reset.
type trafficScenario struct {
	// preStop is the preStop sleep of the pods; 0 for none.
	preStop time.Duration
	// propagation is how long endpoint changes take to reach the balancer.
	propagation time.Duration
	rate        float64
	// gated gives the pods lastcall's serving readiness gate; an agent
	// then runs on every node, as the DaemonSet does, to keep it.
	gated bool
}

func (sc trafficScenario) run(t *testing.T) traffic.Summary {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	doomed := newNode(t, "traffic", pool)
	others := []string{newNode(t, "traffic-b", pool), newNode(t, "traffic-c", pool)}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	rt, err := podrun.Start(ctx, env.Client, "traffic="+ns, podrun.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); rt.Wait() })

	labels := map[string]string{"app": "web", "traffic": ns, cluster.ServedLabel: "true"}
	d := deployment(ns, "web", 3, pool, 20)
	d.Spec.Selector.MatchLabels = map[string]string{"app": "web", "traffic": ns}
	d.Spec.Template.Labels = labels
	d.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, TopologyKey: "kubernetes.io/hostname"}}}}
	c := &d.Spec.Template.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	if sc.preStop > 0 {
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(sc.preStop / time.Second)}}}
	}
	g := startGCE(t)
	a := gceAgent(t, doomed)
	if sc.gated {
		d.Spec.Template.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: serving.Gate}}
		for _, n := range others {
			startAgent(t, n, closedURL(t))
		}
	}
	create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
		Selector: d.Spec.Selector.MatchLabels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		env.Client.CoreV1().Services(ns).Create)
	create(t, pdb(ns, "web", 2), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	create(t, d, env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == 3 && len(onNode(p, doomed)) == 1 })
	spare := newNode(t, "traffic-spare", pool)
	if sc.gated {
		startAgent(t, spare, closedURL(t))
	}

	bal, err := traffic.StartPodBalancer(ctx, env.Client, traffic.PodBalancerConfig{Namespace: ns, Service: "web",
		Resolve: rt.AddrOf, PropagationDelay: sc.propagation})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the balancer sending to 3 endpoints", func() bool { return len(bal.Backends()) == 3 })
	eventually(t, "the GCE sources up", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "gce-preempted"}) == 1
	})

	// Load from 2 s before the notice to 2 s after the node dies.
	const before, after = 2 * time.Second, 2 * time.Second
	var sent atomic.Int64
	lg, err := traffic.NewLoadGen(bal.URL(), sc.rate, traffic.WithDuration(before+gceWindow+after),
		traffic.WithObserver(func(traffic.Result) { sent.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan traffic.Summary, 1)
	go func() { done <- lg.Run(ctx) }()
	eventually(t, "load flowing", func() bool { return float64(sent.Load()) >= sc.rate*before.Seconds() })
	noticed := time.Now()
	g.Set("instance/preempted", "TRUE")
	waitNode(t, doomed, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	t.Logf("drained %s after the notice", time.Since(noticed).Round(10*time.Millisecond))
	select {
	case <-time.After(time.Until(noticed.Add(gceWindow))):
	case <-ctx.Done():
	}
	rt.KillNode(doomed)
	s := <-done
	t.Logf("%s", s)
	return s
}

// With a preStop sleep longer than endpoint propagation, a drain by
// lastcall's agent on a GCE preemption loses no request.
func TestTrafficDrainWithPreStopLosesNothing(t *testing.T) {
	s := trafficScenario{preStop: 2 * time.Second, propagation: time.Second, rate: 200}.run(t)
	if s.Sent < 5000 {
		t.Errorf("%d requests sent, want the load to cover the window", s.Sent)
	}
	if s.Failed() != 0 {
		t.Errorf("%d of %d requests failed: %s", s.Failed(), s.Sent, s)
	}
}

// Without a preStop hook, the server stops before the balancer stops
// sending to it: the harness sees the loss.
func TestTrafficDrainWithoutPreStopLoses(t *testing.T) {
	s := trafficScenario{propagation: time.Second, rate: 200}.run(t)
	if s.Failed() == 0 {
		t.Errorf("no request failed out of %d: the harness does not see the loss a drain without preStop causes", s.Sent)
	}
}

// Without a preStop hook but with lastcall's serving readiness gate, the
// pod stops serving, its endpoint leaves the Service and the balancer
// follows before the server gets SIGTERM: nothing is lost.
func TestTrafficDrainWithServingGateLosesNothing(t *testing.T) {
	s := trafficScenario{propagation: time.Second, rate: 200, gated: true}.run(t)
	if s.Sent < 5000 {
		t.Errorf("%d requests sent, want the load to cover the window", s.Sent)
	}
	if s.Failed() != 0 {
		t.Errorf("%d of %d requests failed: %s", s.Failed(), s.Sent, s)
	}
}
