package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// A spot reclaim of 20 nodes within two seconds, a notice every 100 ms,
// as EventBridge delivers a reclaim: every node named is held before any
// pod is evicted from any of them, so no pod evicted from a doomed node is
// scheduled onto another doomed node, to be evicted again. The pods go to
// the four spare nodes. (With --burst-wait=0, pods of the first nodes land
// on nodes whose notice is yet to come.)
func TestMassInterruptionHoldsEveryNodeFirst(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	ms := e.group(t, 20, pool)
	doomed := map[string]bool{}
	for _, m := range ms {
		doomed[m.node] = true
	}
	for i := range 4 {
		newNode(t, fmt.Sprintf("mass-spare-%d", i), pool)
	}
	const replicas = 48
	create(t, deployment(ns, "web", replicas, pool, 1), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == replicas })
	// The pods must start out on the doomed nodes too.
	pods, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	onDoomed := 0
	for _, p := range pods.Items {
		if doomed[p.Spec.NodeName] {
			onDoomed++
		}
	}
	if onDoomed < 20 {
		t.Fatalf("only %d of %d pods on the doomed nodes: the scene does not test anything", onDoomed, replicas)
	}

	// Every pod bound to a doomed node from now on is a violation.
	w, err := env.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	seen := map[string]string{} // pod UID → doomed node it was bound to
	before := map[string]bool{}
	for _, p := range pods.Items {
		before[string(p.UID)] = true
	}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || before[string(p.UID)] || !doomed[p.Spec.NodeName] {
				continue
			}
			mu.Lock()
			seen[p.Name] = p.Spec.NodeName
			mu.Unlock()
		}
	}()

	e.startProcessor(t, "mass")
	var bodies []string
	for _, m := range ms {
		bodies = append(bodies, spotWarning(m.instance))
	}
	sent := time.Now()
	for _, b := range bodies {
		e.send(t, b)
		time.Sleep(100 * time.Millisecond) // the pace of the notices, not a wait for a condition
	}
	for _, m := range ms {
		waitNode(t, m.node, drainedNode)
	}
	t.Logf("20 nodes drained %s after the notices were sent", time.Since(sent).Round(time.Millisecond))
	mu.Lock()
	if len(seen) > 0 {
		t.Errorf("%d pods evicted from a doomed node were scheduled onto another doomed node: %v", len(seen), seen)
	}
	mu.Unlock()
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		up := 0
		for _, pod := range p {
			if doomed[pod.Spec.NodeName] && pod.DeletionTimestamp == nil {
				return false
			}
			if !doomed[pod.Spec.NodeName] && pod.Spec.NodeName != "" && ready(pod) {
				up++
			}
		}
		return up == replicas
	})
}
