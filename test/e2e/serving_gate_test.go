package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/serving"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// The agent keeps the serving gate of its own node's gated pods True, so
// they become Ready; a gated pod on a node without an agent never does.
// A gate found withdrawn while no drain of the node is in force is set
// True again.
func TestServingGateKeptByTheAgentOfItsNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	kept := newNode(t, "gate", pool)
	bare := newNode(t, "gate-bare", pool)
	rt, err := podrun.Start(ctx, env.Client, "gate="+ns, podrun.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); rt.Wait() })
	startAgent(t, kept, closedURL(t))

	gated := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"gate": ns, cluster.ServedLabel: "true"}},
			Spec: corev1.PodSpec{NodeName: node, ReadinessGates: []corev1.PodReadinessGate{{ConditionType: serving.Gate}},
				Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}}}
	}
	create(t, gated("on-kept", kept), env.Client.CoreV1().Pods(ns).Create)
	create(t, gated("on-bare", bare), env.Client.CoreV1().Pods(ns).Create)
	byName := func(p []*corev1.Pod, name string) *corev1.Pod {
		for _, x := range p {
			if x.Name == name {
				return x
			}
		}
		return nil
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		k, b := byName(p, "on-kept"), byName(p, "on-bare")
		return k != nil && b != nil && cluster.PodReady(k) && b.Status.Phase == corev1.PodRunning
	})
	pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		c := serving.Condition(p)
		switch p.Name {
		case "on-kept":
			if c == nil || c.Status != corev1.ConditionTrue || c.Reason != serving.ReasonServing {
				t.Errorf("gate of the pod on the agent's node: %+v, want True (%s)", c, serving.ReasonServing)
			}
		case "on-bare":
			if c != nil || cluster.PodReady(p) {
				t.Errorf("pod on a node without an agent: gate %+v, Ready %v; want no gate condition, not Ready", c, cluster.PodReady(p))
			}
		}
	}

	// Withdrawn as a drain would, but no drain is in force.
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{{
		Type: serving.Gate, Status: corev1.ConditionFalse, Reason: serving.ReasonDraining, LastTransitionTime: metav1.Now()}}}})
	if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, "on-kept", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		k := byName(p, "on-kept")
		c := serving.Condition(k)
		return k != nil && c != nil && c.Status == corev1.ConditionTrue && cluster.PodReady(k)
	})
}
