package drain

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// evictOutcome is how one pod's eviction ended.
type evictOutcome int

const (
	evicted evictOutcome = iota // the API accepted the eviction
	gone                        // the pod was already gone or replaced
)

// evict asks the Eviction API to remove pod, with a UID precondition so that
// a replacement of the same name is never hit. A 429 (a PodDisruptionBudget
// says no, or its status is not computed yet) and other errors are retried
// with capped exponential backoff until ctx ends; 404 and 409 mean the pod
// is gone.
func (d *Drainer) evict(ctx context.Context, req Request, pod *corev1.Pod) (evictOutcome, error) {
	wait := d.opts.RetryInitial
	blocked := false
	for attempt := 1; ; attempt++ {
		grace := ClampGrace(pod, d.clock.Now(), req.Deadline, d.opts.DeadlineMargin)
		uid := pod.UID
		err := d.client.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
			DeleteOptions: &metav1.DeleteOptions{
				Preconditions:      &metav1.Preconditions{UID: &uid},
				GracePeriodSeconds: grace,
			},
		})
		d.metrics.evictions.WithLabelValues(statusCode(err)).Inc()
		switch {
		case err == nil:
			msg := fmt.Sprintf("Evicted by lastcall: %s", req.Why)
			if grace != nil {
				msg += fmt.Sprintf("; grace period shortened to %ds to finish before the deadline", *grace)
			}
			d.events.Event(pod, corev1.EventTypeNormal, "Evicted", msg)
			d.log.Debug("pod evicted", "pod", pod.Namespace+"/"+pod.Name, "attempts", attempt, "grace", grace)
			return evicted, nil
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			return gone, nil
		case apierrors.IsTooManyRequests(err):
			if !blocked {
				blocked = true
				d.events.Event(pod, corev1.EventTypeWarning, "EvictionBlocked",
					"lastcall cannot evict this pod yet: "+err.Error())
				d.log.Info("eviction blocked, retrying", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			}
		case ctx.Err() != nil:
			return 0, ctx.Err()
		default:
			d.log.Warn("eviction failed, retrying", "pod", pod.Namespace+"/"+pod.Name, "err", err, "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("evicting %s/%s: %w (last answer: %v)", pod.Namespace, pod.Name, ctx.Err(), err)
		case <-d.clock.After(jitter(wait)):
		}
		wait = min(wait*2, d.opts.RetryMax)
	}
}

// statusCode is the HTTP status of an API answer, as a metric label.
func statusCode(err error) string {
	if err == nil {
		return "201"
	}
	var s apierrors.APIStatus
	if errors.As(err, &s) && s.Status().Code != 0 {
		return strconv.Itoa(int(s.Status().Code))
	}
	return "error"
}

// jitter spreads retries of many pods blocked by one budget over ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
