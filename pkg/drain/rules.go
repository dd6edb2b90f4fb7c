package drain

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Verdict is what a drain does with a pod.
type Verdict int

const (
	// Evict asks the Eviction API to remove the pod.
	Evict Verdict = iota
	// Skip leaves the pod where it is.
	Skip
	// WaitOnly waits for a pod that is already on its way out.
	WaitOnly
)

// AnnotationSkipEviction, set to "true" on a pod, keeps lastcall from
// evicting it: the pod stays on the node and goes with it (a batch job
// that checkpoints on the kubelet's own shutdown).
const AnnotationSkipEviction = "lastcall.io/skip-eviction"

// RuleAnnotated is the rule that leaves the pods annotated
// AnnotationSkipEviction.
const RuleAnnotated = "annotated"

// Rule looks at one pod and either decides (decided true) or passes.
type Rule struct {
	// Name is the reason reported for the pods it decides.
	Name  string
	Check func(pod *corev1.Pod, self types.NamespacedName) (v Verdict, decided bool)
}

// Rules are checked in order; the first decisive answer wins, and a pod no
// rule decides is evicted.
var Rules = []Rule{
	{Name: "mirror", Check: func(p *corev1.Pod, _ types.NamespacedName) (Verdict, bool) {
		_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
		return Skip, ok
	}},
	{Name: "self", Check: func(p *corev1.Pod, self types.NamespacedName) (Verdict, bool) {
		return Skip, self.Name != "" && p.Name == self.Name && p.Namespace == self.Namespace
	}},
	{Name: RuleAnnotated, Check: func(p *corev1.Pod, _ types.NamespacedName) (Verdict, bool) {
		return Skip, p.Annotations[AnnotationSkipEviction] == "true"
	}},
	{Name: "daemonset", Check: func(p *corev1.Pod, _ types.NamespacedName) (Verdict, bool) {
		for _, o := range p.OwnerReferences {
			if o.Controller != nil && *o.Controller && o.Kind == "DaemonSet" {
				return Skip, true
			}
		}
		return Skip, false
	}},
	{Name: "completed", Check: func(p *corev1.Pod, _ types.NamespacedName) (Verdict, bool) {
		return Skip, p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	}},
	{Name: "terminating", Check: func(p *corev1.Pod, _ types.NamespacedName) (Verdict, bool) {
		return WaitOnly, p.DeletionTimestamp != nil
	}},
}

// Classify applies Rules to a pod and returns its verdict and the deciding
// rule's name ("" when no rule decided and the pod is evicted).
func Classify(p *corev1.Pod, self types.NamespacedName) (Verdict, string) {
	for _, r := range Rules {
		if v, ok := r.Check(p, self); ok {
			return v, r.Name
		}
	}
	return Evict, ""
}
