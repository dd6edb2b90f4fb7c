// Package serving is lastcall's pod readiness gate, lastcall.io/serving:
// the way a workload whose servers stop at SIGTERM, with no preStop hook,
// loses no request when its node is drained. A pod opts in by declaring
// the gate in spec.readinessGates (or through the chart's admission
// policy). The kubelet counts such a pod Ready only while the gate's
// condition is True: the Keeper sets it True on the pods of its node, and
// before evicting one a drain sets it False (Withdraw), waits until its
// endpoint has left the Service's EndpointSlices and the balancers have
// had time to follow, and only then evicts it, so that the server stops
// after traffic to it has.
//
// The price: while no lastcall agent runs on a node, a gated pod started
// there never becomes Ready.
package serving

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Gate is the readiness gate's condition type.
const Gate corev1.PodConditionType = "lastcall.io/serving"

// The reasons of the gate's condition.
const (
	// ReasonServing: the pod may serve.
	ReasonServing = "NodeServing"
	// ReasonDraining: its node is being drained; the pod is about to be
	// evicted.
	ReasonDraining = "NodeDraining"
)

// Gated reports whether the pod declares the gate.
func Gated(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == Gate })
}

// Condition is the pod's gate condition, nil when it has none yet.
func Condition(p *corev1.Pod) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == Gate {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// Withdraw sets the pod's gate condition False: the kubelet then counts
// it not Ready, and the endpointslice controller marks its endpoints not
// ready.
func Withdraw(ctx context.Context, client kubernetes.Interface, p *corev1.Pod, why string) error {
	return set(ctx, client, p, corev1.ConditionFalse, ReasonDraining, why)
}

// set patches the gate condition of p (of p's UID only), leaving its other
// conditions alone: a strategic merge patch merges conditions by type.
func set(ctx context.Context, client kubernetes.Interface, p *corev1.Pod, status corev1.ConditionStatus, reason, message string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": p.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: Gate, Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.Now(),
		}}},
	})
	if err != nil {
		return err
	}
	if _, err := client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("setting %s %s on pod %s/%s: %w", Gate, status, p.Namespace, p.Name, err)
	}
	return nil
}
