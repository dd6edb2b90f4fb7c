package drain

import (
	corev1 "k8s.io/api/core/v1"
)

// systemCriticalPriority is the priority from which a pod counts as
// critical (scheduling.SystemCriticalPriority).
const systemCriticalPriority = 2_000_000_000

// IsCritical reports whether a pod is system-critical: it is evicted only
// after every other pod has gone.
func IsCritical(p *corev1.Pod) bool {
	switch p.Spec.PriorityClassName {
	case "system-cluster-critical", "system-node-critical":
		return true
	}
	return p.Spec.Priority != nil && *p.Spec.Priority >= systemCriticalPriority
}

// groupByPriority splits pods into the order they are evicted in:
// non-critical first, then critical. Empty groups are dropped.
func groupByPriority(pods []*corev1.Pod) [][]*corev1.Pod {
	var normal, critical []*corev1.Pod
	for _, p := range pods {
		if IsCritical(p) {
			critical = append(critical, p)
		} else {
			normal = append(normal, p)
		}
	}
	var groups [][]*corev1.Pod
	for _, g := range [][]*corev1.Pod{normal, critical} {
		if len(g) > 0 {
			groups = append(groups, g)
		}
	}
	return groups
}
