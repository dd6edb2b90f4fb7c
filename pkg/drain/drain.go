// Package drain empties a node through the Eviction API, so that
// PodDisruptionBudgets are honoured, within the deadline the cloud gave.
package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
)

// Options tune a Drainer.
type Options struct {
	// Concurrency bounds the evictions in flight at once.
	Concurrency int
	// DeadlineMargin is how long before the deadline every pod must be
	// gone; grace periods are shortened to fit.
	DeadlineMargin time.Duration
	// RetryInitial and RetryMax bound the backoff between eviction retries.
	RetryInitial, RetryMax time.Duration
	// Self is lastcall's own pod, never evicted.
	Self types.NamespacedName
	// DryRun lists what would be evicted and changes nothing.
	DryRun bool
	// Policy decides what happens when a PodDisruptionBudget still blocks
	// a pod as the deadline nears.
	Policy Policy
	// LBDelay is waited after the node left the load balancers and before
	// the first eviction (see LBDelay, which shortens it).
	LBDelay time.Duration
	// EvictDaemonSets evicts DaemonSet pods too, after every other pod is
	// gone (log shippers then flush what the others wrote).
	EvictDaemonSets bool
}

// Policy is what a drain does when a PodDisruptionBudget and the deadline
// collide.
type Policy string

const (
	// PolicyRespect never overrides a budget: a blocked pod stays until the
	// deadline, and the cloud kills it.
	PolicyRespect Policy = "respect"
	// PolicyGracefulOverride honours a budget until the last moment the pod
	// can still shut down gracefully (OverrideAt), then deletes it with the
	// grace it has left.
	PolicyGracefulOverride Policy = "graceful-override"
)

// Policies lists the policies.
var Policies = []Policy{PolicyRespect, PolicyGracefulOverride}

// DefaultOptions are the defaults of the command line.
func DefaultOptions() Options {
	return Options{Concurrency: 100, DeadlineMargin: 5 * time.Second, RetryInitial: 200 * time.Millisecond, RetryMax: 5 * time.Second,
		Policy: PolicyGracefulOverride}
}

// Request is one drain.
type Request struct {
	Node string
	// Kind is why, as a metric label (an interruption kind).
	Kind string
	// Deadline is when the node goes; zero for none.
	Deadline time.Time
	// Why is told to every evicted pod, e.g. "spot interruption of node x".
	Why string
}

// Deadline is the deadline a drain works to: the notice's, unless it has
// none or it has already passed (a maintenance window that has opened, a
// notice seen late after a restart); then the node can go at any moment,
// evicting still beats being killed, and now+fallback bounds the drain.
func Deadline(notice, now time.Time, fallback time.Duration) time.Time {
	if notice.After(now) {
		return notice
	}
	return now.Add(fallback)
}

// Result says what a drain did.
type Result struct {
	Evicted int
	// Skipped counts pods left in place, by rule.
	Skipped map[string]int
	// Remaining are the pods (namespace/name) still there when the drain
	// ended early.
	Remaining []string
	DryRun    bool
}

// ErrDeadline is returned when the deadline passed with pods remaining.
var ErrDeadline = errors.New("drain deadline passed with pods remaining")

// ResultLabel names how a drain ended: success, dry_run, timeout,
// cancelled or failure.
func ResultLabel(res Result, err error) string {
	switch {
	case err == nil && res.DryRun:
		return "dry_run"
	case err == nil:
		return "success"
	case errors.Is(err, ErrDeadline):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	default:
		return "failure"
	}
}

// EventRecorder is the part of record.EventRecorder the drain uses.
type EventRecorder = record.EventRecorder

// Drainer evicts the pods of a node.
type Drainer struct {
	client  kubernetes.Interface
	pods    PodIndex
	events  EventRecorder
	metrics *metrics
	log     *slog.Logger
	clock   clock.WithTicker
	opts    Options
	running *running
}

// New returns a Drainer.
func New(client kubernetes.Interface, pods PodIndex, events EventRecorder, reg prometheus.Registerer, log *slog.Logger, clk clock.WithTicker, opts Options) *Drainer {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	r := &running{clock: clk, drains: map[*Request]time.Time{}}
	return &Drainer{client: client, pods: pods, events: events, metrics: newMetrics(reg, r.deadlineUsed), log: log, clock: clk, opts: opts, running: r}
}

// Drain evicts every evictable pod of req.Node, non-critical pods before
// critical ones, and waits for them to be gone. It returns ErrDeadline
// (wrapped) if the deadline passes first, and ctx's error if ctx ends.
func (d *Drainer) Drain(ctx context.Context, req Request) (res Result, err error) {
	d.metrics.draining.Inc()
	start := d.clock.Now()
	d.running.add(&req, start)
	defer func() {
		d.running.remove(&req)
		d.metrics.draining.Dec()
		result := ResultLabel(res, err)
		d.metrics.drains.WithLabelValues(result).Inc()
		d.metrics.duration.WithLabelValues(req.Kind, result).Observe(d.clock.Since(start).Seconds())
	}()
	res = Result{Skipped: map[string]int{}, DryRun: d.opts.DryRun}
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	pods, err := d.pods.OnNode(req.Node)
	if err != nil {
		return res, fmt.Errorf("listing pods of node %s: %w", req.Node, err)
	}
	var toEvict, toWait []*corev1.Pod
	for _, p := range pods {
		switch v, rule := Classify(p, d.opts.Self); v {
		case Evict:
			toEvict = append(toEvict, p)
		case WaitOnly:
			toWait = append(toWait, p)
		default:
			res.Skipped[rule]++
			d.metrics.skipped.WithLabelValues(rule).Inc()
		}
	}
	if d.opts.DryRun {
		now := d.clock.Now()
		for _, g := range groupByPriority(toEvict) {
			for _, p := range g {
				d.log.Info("dry run: would evict pod", "pod", p.Namespace+"/"+p.Name,
					"critical", IsCritical(p), "grace", ClampGrace(p, now, req.Deadline, d.opts.DeadlineMargin))
			}
		}
		return res, nil
	}
	// Pods already terminating are waited for with the first group.
	groups := groupByPriority(toEvict)
	if len(groups) == 0 && len(toWait) > 0 {
		groups = [][]*corev1.Pod{nil}
	}
	for i, g := range groups {
		wait := g
		if i == 0 {
			wait = append(append([]*corev1.Pod(nil), g...), toWait...)
		}
		n, err := d.drainGroup(ctx, req, g, wait)
		res.Evicted += n
		if err != nil {
			res.Remaining = d.remaining(pods)
			d.metrics.overdue.Add(float64(len(res.Remaining)))
			if ctx.Err() == context.DeadlineExceeded && (req.Deadline.IsZero() || !d.clock.Now().Before(req.Deadline)) {
				return res, fmt.Errorf("%w: %d pods on %s", ErrDeadline, len(res.Remaining), req.Node)
			}
			return res, err
		}
	}
	return res, nil
}

// drainGroup evicts pods concurrently and waits until every pod of wait is
// gone.
func (d *Drainer) drainGroup(ctx context.Context, req Request, pods, wait []*corev1.Pod) (int, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		count int
		sem   = make(chan struct{}, d.opts.Concurrency)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if out, err := d.evict(ctx, req, p); err == nil && out == evicted {
				mu.Lock()
				count++
				mu.Unlock()
			}
		}()
	}
	err := d.waitGone(ctx, wait)
	cancel()
	wg.Wait()
	return count, err
}

// waitGone returns when every pod has been deleted (or replaced, or has
// finished running), woken by the pod watch.
func (d *Drainer) waitGone(ctx context.Context, pods []*corev1.Pod) error {
	for {
		changed := d.pods.Changed()
		left := 0
		for _, p := range pods {
			if d.present(p) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func (d *Drainer) present(p *corev1.Pod) bool {
	cur, ok := d.pods.Get(p.Namespace, p.Name)
	if !ok || cur.UID != p.UID {
		return false
	}
	return cur.Status.Phase != corev1.PodSucceeded && cur.Status.Phase != corev1.PodFailed
}

func (d *Drainer) remaining(pods []*corev1.Pod) []string {
	var left []string
	for _, p := range pods {
		if v, _ := Classify(p, d.opts.Self); v != Skip && d.present(p) {
			left = append(left, p.Namespace+"/"+p.Name)
		}
	}
	return left
}
