package chart_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/lastcall/lastcall/test/chart"
)

// servingGate is the condition type of lastcall's readiness gate.
const servingGate corev1.PodConditionType = "lastcall.io/serving"

// gateLabel is the namespace label servingGate.namespaceSelector selects
// by default.
const gateLabel = "lastcall.io/serving-gate"

// TestServingGatePolicy renders the chart with servingGate.enabled, applies
// its MutatingAdmissionPolicy and binding to the API server, and creates
// pods: one created in a labelled namespace gets the gate, after any gate
// it lists; one that lists the gate already keeps exactly one; one in an
// unlabelled namespace, in kube-system or in the release's namespace (both
// labelled), or a mirror pod, gets none.
func TestServingGatePolicy(t *testing.T) {
	ctx := testContext(t)
	release := createNamespace(t, "lastcall-gate")
	on := createNamespace(t, "gate-on")
	off := createNamespace(t, "gate-off")
	for _, ns := range []string{on, release, "kube-system"} {
		labelNamespace(ctx, t, ns, new("enabled"))
	}
	t.Cleanup(func() { labelNamespace(context.Background(), t, "kube-system", nil) })

	objs := render(t, "gate", release, map[string]any{"servingGate": map[string]any{"enabled": true}})
	policy := chart.Find(objs, "MutatingAdmissionPolicy")
	binding := chart.Find(objs, "MutatingAdmissionPolicyBinding")
	if policy == nil || binding == nil {
		t.Fatal("servingGate.enabled rendered no MutatingAdmissionPolicy or no binding")
	}
	if got, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); got != policy.GetName() {
		t.Fatalf("the binding names policy %q, not the chart's %q", got, policy.GetName())
	}
	dyn := dynamic.NewForConfigOrDie(env.Config)
	resources := map[string]*unstructured.Unstructured{"mutatingadmissionpolicies": policy, "mutatingadmissionpolicybindings": binding}
	for resource, o := range resources {
		r := dyn.Resource(schemaGVR("admissionregistration.k8s.io", "v1", resource))
		if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "lastcall-test"}); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	// Removed, the policy still applies a moment: wait until it no longer
	// does, so that no later test (or run of this one) meets it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for resource, o := range resources {
			r := dyn.Resource(schemaGVR("admissionregistration.k8s.io", "v1", resource))
			if err := r.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Errorf("deleting %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
		if last, err := waitGated(ctx, on, false); err != nil {
			t.Errorf("the deleted policy still adds the gate in namespace %s: %v (last gates %v)", on, err, last)
		}
	})

	// The API server loads policies and bindings a moment after they are
	// written: retry until a pod of the labelled namespace gets the gate.
	if last, err := waitGated(ctx, on, true); err != nil {
		t.Fatalf("a pod created in namespace %s labelled %s=enabled never got the gate: %v (last gates %v)", on, gateLabel, err, last)
	}

	other := corev1.PodReadinessGate{ConditionType: "example.com/other"}
	for _, tc := range []struct {
		name, ns string
		gates    []corev1.PodReadinessGate
		dryRun   bool // pods of kube-system and mirror pods are not kept
		mirror   bool
		want     []corev1.PodConditionType
	}{
		{name: "plain", ns: on, want: []corev1.PodConditionType{servingGate}},
		{name: "other-gate", ns: on, gates: []corev1.PodReadinessGate{other}, want: []corev1.PodConditionType{other.ConditionType, servingGate}},
		{name: "gated", ns: on, gates: []corev1.PodReadinessGate{{ConditionType: servingGate}}, want: []corev1.PodConditionType{servingGate}},
		{name: "gated-among-others", ns: on, gates: []corev1.PodReadinessGate{{ConditionType: servingGate}, other},
			want: []corev1.PodConditionType{servingGate, other.ConditionType}},
		{name: "mirror", ns: on, dryRun: true, mirror: true},
		{name: "unlabelled", ns: off},
		{name: "unlabelled-other-gate", ns: off, gates: []corev1.PodReadinessGate{other}, want: []corev1.PodConditionType{other.ConditionType}},
		{name: "release", ns: release},
		{name: "kube-system", ns: "kube-system", dryRun: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := podFor(tc.name, tc.gates)
			if tc.mirror {
				pod.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "mirror"}
				pod.Spec.NodeName = "gate-node"
				pod.Spec.SchedulerName = ""
			}
			p, err := env.Client.CoreV1().Pods(tc.ns).Create(ctx, pod, createOptions(tc.dryRun))
			if err != nil {
				t.Fatal(err)
			}
			if got := gates(p); !slices.Equal(got, tc.want) {
				t.Errorf("pod created in %s with gates %v has gates %v, want %v", tc.ns, tc.gates, got, tc.want)
			}
		})
	}
}

// waitGated creates pods with no readiness gate in ns, in dry run, until
// the API server admits one with lastcall's gate (gated) or without it, or
// ctx or a minute ends. It returns the gates of the last pod admitted.
func waitGated(ctx context.Context, ns string, gated bool) ([]corev1.PodConditionType, error) {
	var last []corev1.PodConditionType
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := env.Client.CoreV1().Pods(ns).Create(ctx, podFor("probe", nil), createOptions(true))
		if err != nil {
			return false, err
		}
		last = gates(p)
		return slices.Contains(last, servingGate) == gated, nil
	})
	return last, err
}

func createOptions(dryRun bool) metav1.CreateOptions {
	if dryRun {
		return metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	}
	return metav1.CreateOptions{}
}

// podFor is a pod with these readiness gates that no scheduler binds: it
// stays Pending, and is removed at once with its namespace.
func podFor(name string, gates []corev1.PodReadinessGate) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			SchedulerName:  "lastcall-test-nobody",
			ReadinessGates: gates,
			Containers:     []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
}

// gates lists a pod's readiness gates' condition types, in order.
func gates(p *corev1.Pod) []corev1.PodConditionType {
	var out []corev1.PodConditionType
	for _, g := range p.Spec.ReadinessGates {
		out = append(out, g.ConditionType)
	}
	return out
}

// labelNamespace sets the namespace's gateLabel to value, or removes it
// (nil).
func labelNamespace(ctx context.Context, t *testing.T, ns string, value *string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{gateLabel: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling namespace %s: %v", ns, err)
	}
}
