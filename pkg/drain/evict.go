package drain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/lastcall/lastcall/pkg/node"
)

// evictOutcome is how one pod's eviction ended.
type evictOutcome int

const (
	evicted evictOutcome = iota // the API accepted the eviction
	gone                        // the pod was already gone or replaced
	deleted                     // deleted despite its budget (graceful-override)
)

// eviction is one pod's way out of a drain.
type eviction struct {
	d       *Drainer
	req     Request
	sched   *schedule
	group   int
	budgets *budgetWatch
	gates   *gates
	spread  *spread
	pod     *corev1.Pod
	// stop closes once every pod of the group is gone.
	stop <-chan struct{}
}

// run asks the Eviction API to remove the pod, with a grace period that
// ends by its group's end (see GroupEnds) and a UID precondition so that a
// replacement of the same name is never hit. A 429 (a PodDisruptionBudget
// says no, or its status is not computed yet) and other errors are retried
// with capped exponential backoff, and a 429 also as soon as a budget of
// the pod's namespace changes, until ctx ends or stop closes (every pod is
// gone); 404 and 409 mean the pod is gone. The group's end, and with it
// the grace and the override time, is read again at each attempt, so a
// retargeted drain re-plans the evictions still to come.
func (e *eviction) run(ctx context.Context) (evictOutcome, error) {
	d, pod := e.d, e.pod
	backoff := wait.Backoff{Duration: d.opts.RetryInitial, Factor: 2, Jitter: 0.2, Cap: d.opts.RetryMax, Steps: math.MaxInt32}
	blocked, unserved, spread := false, false, e.spread == nil || d.opts.DryRun
	for attempt := 1; ; attempt++ {
		end, replanned := e.sched.end(e.group)
		override := d.opts.Policy == PolicyGracefulOverride && !end.IsZero()
		overrideAt := OverrideAt(pod, e.sched.start, end, 0)
		var budgetChanged <-chan struct{}
		if !spread && (end.IsZero() || d.clock.Now().Before(overrideAt)) {
			if !e.spread.wait(ctx, pod, spreadBound(end, overrideAt, d.clock.Now()), e.stop) {
				return stopped(ctx)
			}
		}
		spread = true
		// A gated pod stops serving first (see gates.unserve), while
		// there is time for it: one pod of an owner at a time, once a dry
		// run says its budgets allow it to go.
		release := func() {}
		var err error
		if !unserved && e.gates.wanted(pod) && (end.IsZero() || d.clock.Now().Before(overrideAt)) {
			var ok bool
			if release, ok = e.gates.lock(ctx, pod, e.stop); !ok {
				return stopped(ctx)
			}
			if err = e.evict(ctx, nil, true); err == nil {
				unserved = true
				e.gates.unserve(ctx, e.req, pod, gateBound(end, overrideAt, d.clock.Now()))
			}
		}
		grace := ClampGrace(pod, d.clock.Now(), end, 0)
		if err == nil {
			err = e.evict(ctx, grace, false)
		}
		release()
		d.metrics.evictions.WithLabelValues(statusCode(err)).Inc()
		switch {
		case err == nil:
			msg := fmt.Sprintf("Evicted by lastcall: %s", e.req.Why)
			if grace != nil {
				msg += fmt.Sprintf("; grace period shortened to %ds to finish before the deadline", *grace)
			}
			d.events.Event(pod, corev1.EventTypeNormal, "Evicted", msg)
			d.log.Debug("pod evicted", "pod", pod.Namespace+"/"+pod.Name, "attempts", attempt, "grace", grace)
			return evicted, nil
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			return gone, nil
		case refused(err):
			if override && !d.clock.Now().Before(overrideAt) {
				req := e.req
				req.Deadline, _ = e.sched.current()
				return d.override(ctx, req, end, pod, err)
			}
			budgetChanged = e.budgets.changed(pod.Namespace)
			if !blocked {
				blocked = true
				msg := "lastcall cannot evict this pod yet: " + err.Error()
				if override {
					msg += fmt.Sprintf("; it will be deleted anyway at %s, the last moment it can still shut down gracefully before the deadline",
						overrideAt.UTC().Format(time.RFC3339))
				}
				d.events.Event(pod, corev1.EventTypeWarning, "EvictionBlocked", msg)
				d.log.Info("eviction blocked, retrying as soon as its budget changes", "pod", pod.Namespace+"/"+pod.Name, "err", err, "override_at", overrideAt)
			}
		case ctx.Err() != nil:
			return 0, ctx.Err()
		default:
			d.log.Warn("eviction failed, retrying", "pod", pod.Namespace+"/"+pod.Name, "err", err, "attempt", attempt)
		}
		pause := backoff.Step()
		if override && refused(err) {
			// Wake at the override moment rather than a backoff past it.
			pause = max(0, min(pause, overrideAt.Sub(d.clock.Now())))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("evicting %s/%s: %w (last answer: %v)", pod.Namespace, pod.Name, ctx.Err(), err)
		case <-e.stop: // the pod is gone: nothing left to retry
			return gone, nil
		case <-budgetChanged:
		case <-replanned:
		case <-d.clock.After(pause):
		}
	}
}

// stopped is how an eviction ends when a wait before it was cut short:
// ctx's error, or gone when the group's pods are (stop closed).
func stopped(ctx context.Context) (evictOutcome, error) {
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return gone, nil
}

// evict asks the Eviction API to evict the pod with grace, with a UID
// precondition so that a replacement of the same name is never hit; in a
// dry run the API only says whether it would.
func (e *eviction) evict(ctx context.Context, grace *int64, dryRun bool) error {
	uid := e.pod.UID
	opts := &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, GracePeriodSeconds: grace}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return e.d.client.PolicyV1().Evictions(e.pod.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: e.pod.Name, Namespace: e.pod.Namespace},
		DeleteOptions: opts,
	})
}

// refused says whether an eviction was refused for the pod's budgets: a
// 429 (a budget allows no disruption now, or its status is not computed
// yet), or the 500 the Eviction API answers for a pod that more than one
// budget covers, which it cannot evict at all.
func refused(err error) bool {
	return apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) && strings.Contains(err.Error(), "more than one PodDisruptionBudget")
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

// override deletes a pod its budget still protects, at the last moment it
// can shut down gracefully: the cloud is about to kill it anyway. blockedBy
// is the eviction's refusal, which names the budget.
func (d *Drainer) override(ctx context.Context, req Request, end time.Time, pod *corev1.Pod, blockedBy error) (evictOutcome, error) {
	grace := ClampGrace(pod, d.clock.Now(), end, 0)
	uid := pod.UID
	err := d.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid}, GracePeriodSeconds: grace,
	})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return gone, nil
	case err != nil:
		d.metrics.overrides.WithLabelValues("error").Inc()
		return 0, fmt.Errorf("deleting %s/%s past its budget: %w", pod.Namespace, pod.Name, err)
	}
	d.metrics.overrides.WithLabelValues("deleted").Inc()
	budget := budgetOf(blockedBy)
	given := NeededGrace(pod)
	if grace != nil {
		given = time.Duration(*grace) * time.Second
	}
	msg := fmt.Sprintf("%s still allowed no disruption %s before the deadline: lastcall deleted the pod with %s of grace "+
		"(policy graceful-override), as the node goes at %s anyway (%s)",
		budget, req.Deadline.Sub(d.clock.Now()).Round(time.Second), given, req.Deadline.UTC().Format(time.RFC3339), req.Why)
	d.events.Event(pod, corev1.EventTypeWarning, "DisruptionBudgetOverridden", msg)
	d.events.Event(node.Ref(req.Node), corev1.EventTypeWarning, "DisruptionBudgetOverridden", pod.Namespace+"/"+pod.Name+": "+msg)
	d.log.Warn("disruption budget overridden", "pod", pod.Namespace+"/"+pod.Name, "budget", budget, "grace", given,
		"deadline", req.Deadline)
	return deleted, nil
}

// budgetOf names the PodDisruptionBudget an eviction's 429 cites.
func budgetOf(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) && s.Status().Details != nil {
		for _, c := range s.Status().Details.Causes {
			if c.Type == policyv1.DisruptionBudgetCause {
				if m := budgetName.FindStringSubmatch(c.Message); m != nil {
					return "PodDisruptionBudget " + m[1]
				}
			}
		}
	}
	return "its PodDisruptionBudget"
}

// budgetName matches the eviction API's cause: "The disruption budget web
// needs 2 healthy pods and has 2 currently".
var budgetName = regexp.MustCompile(`disruption budget (\S+) needs`)
