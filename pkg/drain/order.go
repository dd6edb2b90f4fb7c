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

// The eviction groups, in the order a drain empties them.
const (
	GroupNonCritical = "non-critical"
	GroupCritical    = "critical"
	// GroupDaemonSet holds DaemonSet pods, evicted only with
	// Options.EvictDaemonSets.
	GroupDaemonSet = "daemonset"
)

// Group is pods evicted together; the next group starts once they are gone.
type Group struct {
	Name string
	Pods []*corev1.Pod
}

// Sorted is a node's pods as a drain sees them.
type Sorted struct {
	// Groups are evicted in order; empty groups are left out.
	Groups []Group
	// Terminating pods are only waited for, with the first group.
	Terminating []*corev1.Pod
	// Skipped pods stay, by the rule that decided it.
	Skipped map[string][]*corev1.Pod
}

// Sort classifies pods with Rules and orders the evictable ones: the plan
// every drain follows, and that lastcall plan prints.
func Sort(pods []*corev1.Pod, o Options) Sorted {
	s := Sorted{Skipped: map[string][]*corev1.Pod{}}
	var evict, daemons []*corev1.Pod
	for _, p := range pods {
		switch v, rule := Classify(p, o.Self); {
		case v == Evict:
			evict = append(evict, p)
		case v == WaitOnly:
			s.Terminating = append(s.Terminating, p)
		case rule == "daemonset" && o.EvictDaemonSets:
			daemons = append(daemons, p)
		default:
			s.Skipped[rule] = append(s.Skipped[rule], p)
		}
	}
	for _, g := range groupByPriority(evict) {
		name := GroupNonCritical
		if IsCritical(g[0]) {
			name = GroupCritical
		}
		s.Groups = append(s.Groups, Group{Name: name, Pods: g})
	}
	if len(daemons) > 0 {
		s.Groups = append(s.Groups, Group{Name: GroupDaemonSet, Pods: daemons})
	}
	return s
}
