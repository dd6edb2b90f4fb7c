package e2e

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// Every ready endpoint of a Service is on the node, and no budget guards
// it: the drain lets the first pod go at once and each next one only once
// a replacement is ready on another node, so the Service never has zero
// ready endpoints.
func TestDrainNeverEmptiesAService(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	doomed := newNode(t, "spread", pool)
	rt, err := podrun.Start(ctx, env.Client, "spread="+ns, podrun.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); rt.Wait() })

	d := deployment(ns, "web", 3, pool, 20)
	d.Spec.Template.Labels = map[string]string{"app": "web", "spread": ns, cluster.ServedLabel: "true"}
	d.Spec.Template.Annotations = map[string]string{podrun.StartupAnnotation: "1s"}
	c := &d.Spec.Template.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}}
	create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		env.Client.CoreV1().Services(ns).Create)
	create(t, d, env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, doomed)) == 3 })
	newNode(t, "spread-spare", pool)

	// Every pod change of the namespace, in order.
	w, err := env.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []corev1.Pod
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Error {
				mu.Lock()
				seen = append(seen, *p)
				mu.Unlock()
			}
		}
	}()

	g := startGCE(t)
	a := gceAgent(t, doomed)
	eventually(t, "the GCE sources up", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "gce-preempted"}) == 1
	})
	g.Set("instance/preempted", "TRUE")
	waitNode(t, doomed, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	w.Stop()

	mu.Lock()
	defer mu.Unlock()
	readyElsewhere, deleting := map[string]bool{}, map[string]bool{}
	for _, p := range seen {
		switch {
		case p.Spec.NodeName == doomed && p.DeletionTimestamp != nil && !deleting[p.Name]:
			deleting[p.Name] = true
			if len(deleting) == 1 {
				continue // the first goes at once: the others still serve
			}
			if len(readyElsewhere) < len(deleting)-1 {
				t.Errorf("%s, the %d. pod of the node to go, went with %d replicas ready elsewhere, want %d",
					p.Name, len(deleting), len(readyElsewhere), len(deleting)-1)
			}
		case p.Spec.NodeName != doomed && p.Spec.NodeName != "" && cluster.PodReady(&p):
			readyElsewhere[p.Name] = true
		}
	}
	if len(deleting) != 3 {
		t.Errorf("%d pods of the node deleted, want 3", len(deleting))
	}
	if got := a.metric(t, "lastcall_drain_service_waits_total", map[string]string{"outcome": "ready-elsewhere"}); got != 2 {
		t.Errorf("lastcall_drain_service_waits_total{outcome=ready-elsewhere} = %v, want 2", got)
	}
}
