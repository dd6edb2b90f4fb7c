package drain

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ClampGrace returns the grace period to evict a pod with at now, so that the
// pod, told to stop now, is gone margin before the deadline. It returns nil
// when the pod's own grace period already fits (or there is no deadline), and
// at least one second otherwise: a grace of 0 would force the deletion past
// the kubelet.
func ClampGrace(p *corev1.Pod, now, deadline time.Time, margin time.Duration) *int64 {
	if deadline.IsZero() {
		return nil
	}
	own := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if p.Spec.TerminationGracePeriodSeconds != nil {
		own = *p.Spec.TerminationGracePeriodSeconds
	}
	avail := int64(deadline.Sub(now.Add(margin)) / time.Second)
	if avail >= own {
		return nil
	}
	return new(max(avail, 1))
}

// NeededGrace is the time a pod asks for to shut down: its
// terminationGracePeriodSeconds, or Kubernetes' default of 30 s.
func NeededGrace(p *corev1.Pod) time.Duration {
	if p.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return corev1.DefaultTerminationGracePeriodSeconds * time.Second
}

// OverrideAt is, under the graceful-override policy, the moment a pod that
// its PodDisruptionBudget still protects is deleted anyway: the last moment
// it can still shut down gracefully before the deadline (less the margin).
// A pod whose grace period is longer than half the window (start to
// deadline less margin) is given half of it, so that its budget is honoured
// for the other half; never before start.
func OverrideAt(p *corev1.Pod, start, deadline time.Time, margin time.Duration) time.Time {
	end := deadline.Add(-margin)
	window := end.Sub(start)
	at := end.Add(-min(NeededGrace(p), window/2))
	if at.Before(start) {
		return start
	}
	return at
}

// LBDelay is how long to wait, after the node has left the load balancers
// and before the first eviction, for them to stop sending it connections:
// the configured delay, shortened so that the pods still get their whole
// grace period before the deadline (less the margin), and never negative.
func LBDelay(configured time.Duration, pods []*corev1.Pod, start, deadline time.Time, margin time.Duration) time.Duration {
	if configured <= 0 || deadline.IsZero() {
		return max(configured, 0)
	}
	var longest time.Duration
	for _, p := range pods {
		longest = max(longest, NeededGrace(p))
	}
	room := deadline.Add(-margin).Sub(start) - longest
	return max(0, min(configured, room))
}

// GroupEnds is, for each group, when its pods must be gone: the deadline
// less the margin, less the grace periods the later groups need (the
// longest of each), so that critical pods still shut down gracefully after
// the others. The reserve is at most half the window (start to the
// deadline less the margin). Without a deadline every end is zero.
func GroupEnds(groups []Group, start, deadline time.Time, margin time.Duration) []time.Time {
	ends := make([]time.Time, len(groups))
	if deadline.IsZero() {
		return ends
	}
	end := deadline.Add(-margin)
	half := max(0, end.Sub(start)/2)
	var reserve time.Duration
	for i := len(groups) - 1; i >= 0; i-- {
		ends[i] = end.Add(-min(reserve, half))
		var longest time.Duration
		for _, p := range groups[i].Pods {
			longest = max(longest, NeededGrace(p))
		}
		reserve += longest
	}
	return ends
}
