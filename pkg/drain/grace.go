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
