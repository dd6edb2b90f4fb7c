package chart_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/lastcall/lastcall/test/cluster"
)

// TestWorkloadsStayOffNodesTheyCannotServe applies the chart's agent
// DaemonSet and queue Deployment, with their defaults, to the real API
// server, where the DaemonSet controller and the scheduler place them
// among four nodes: an ordinary one, an EKS Fargate one, a virtual-kubelet
// one and a spot one. The agent runs on the ordinary and the spot node
// only; the queue processor's replica avoids the spot node it would drain,
// and Fargate.
func TestWorkloadsStayOffNodesTheyCannotServe(t *testing.T) {
	ctx := testContext(t)
	pool := fmt.Sprintf("place-%d", time.Now().UnixNano())
	nodes := map[string]map[string]string{
		"ordinary": {},
		"fargate":  {"eks.amazonaws.com/compute-type": "fargate"},
		"virtual":  {"type": "virtual-kubelet"},
		"spot":     {"karpenter.sh/capacity-type": "spot", "eks.amazonaws.com/capacityType": "SPOT"},
	}
	kindOf := map[string]string{}
	for kind, labels := range nodes {
		name := pool + "-" + kind
		labels["pool"] = pool
		if _, err := env.AddNode(ctx, name, cluster.WithLabels(labels)); err != nil {
			t.Fatal(err)
		}
		kindOf[name] = kind
		t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	onPool := map[string]any{"pool": pool}
	for _, tc := range []struct {
		mode   string
		values map[string]any
		want   map[string]bool // the node kinds its pods may run on
		pods   int
	}{
		{"agent", map[string]any{"agent": map[string]any{"nodeSelector": onPool}, "drainability": map[string]any{"enabled": false}},
			map[string]bool{"ordinary": true, "spot": true}, 2},
		{"queue", map[string]any{"mode": "queue", "queue": map[string]any{"url": queueURL, "replicas": 1, "nodeSelector": onPool}},
			map[string]bool{"ordinary": true, "virtual": true}, 1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ns := createNamespace(t, "lastcall-place-"+tc.mode)
			for _, o := range render(t, "place", ns, tc.values) {
				switch o.GetKind() {
				case "ServiceAccount", "DaemonSet", "Deployment":
				default:
					continue
				}
				if err := apply(ctx, mapper, dyn, ns, o); err != nil {
					t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			var placed map[string]string
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
				if err != nil {
					return false, err
				}
				placed = map[string]string{}
				for _, p := range pods.Items {
					if p.Spec.NodeName != "" {
						placed[p.Name] = kindOf[p.Spec.NodeName]
					}
				}
				return len(placed) >= tc.pods, nil
			})
			if err != nil {
				t.Fatalf("%d of %d pods placed: %v", len(placed), tc.pods, err)
			}
			for pod, kind := range placed {
				if !tc.want[kind] {
					t.Errorf("pod %s placed on the %s node", pod, kind)
				}
			}
			if tc.mode != "agent" {
				return
			}
			// The DaemonSet controller's own count of the nodes it serves.
			ds, err := env.Client.AppsV1().DaemonSets(ns).Get(ctx, "place-lastcall", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ds.Status.ObservedGeneration == ds.Generation && ds.Status.DesiredNumberScheduled != int32(tc.pods) {
				t.Errorf("the DaemonSet wants %d nodes, want %d (the ordinary and the spot node)", ds.Status.DesiredNumberScheduled, tc.pods)
			}
		})
	}
}

// TestCriticalPodsQuotaCoversLastcall applies the chart's ResourceQuota,
// cut to one pod, and creates pods in its namespace: the quota's scope
// covers the priority classes of lastcall's pods, as GKE requires of a
// namespace outside kube-system before it admits one, so a second pod of
// the agent's priority class goes past it and is refused; pods of another
// priority are not counted.
func TestCriticalPodsQuotaCoversLastcall(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(t, "lastcall-quota")
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	quota := false
	for _, o := range render(t, "quota", ns, map[string]any{"criticalPodsQuota": map[string]any{"pods": 1}}) {
		if o.GetKind() != "ResourceQuota" {
			continue
		}
		quota = true
		if err := apply(ctx, mapper, dyn, ns, o); err != nil {
			t.Fatal(err)
		}
	}
	if !quota {
		t.Fatal("the chart rendered no ResourceQuota by default")
	}
	create := func(pc string) error {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "q-"}, Spec: corev1.PodSpec{
			PriorityClassName: pc, NodeName: "nowhere",
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
		_, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	}
	for i := range 3 {
		if err := create(""); err != nil {
			t.Fatalf("pod %d of no priority class: %v", i, err)
		}
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		last = create("system-node-critical")
		return last != nil && strings.Contains(last.Error(), "exceeded quota"), nil
	})
	if err != nil {
		t.Fatalf("pods of priority system-node-critical were never refused past the quota of one: %v (last: %v)", err, last)
	}
}
