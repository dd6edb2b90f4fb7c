// Package drain empties a node through the Eviction API, so that
// PodDisruptionBudgets are honoured, within the deadline the cloud gave. A
// drain in progress can be re-planned to a new deadline (Run.Retarget): its
// group ends, grace periods and override times follow, and no pod is
// evicted twice.
package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// A pod blocked by its PodDisruptionBudget is also retried as soon as
	// a budget of its namespace changes.
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
	// GateDelay is waited, after a pod with the serving readiness gate
	// left its Service's EndpointSlices, before it is evicted: the time
	// kube-proxy and load balancers take to follow.
	GateDelay time.Duration
	// KeepServicesServing keeps a drain from taking a Service to zero
	// ready endpoints while the deadline leaves room (see spread).
	KeepServicesServing bool
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
		Policy: PolicyGracefulOverride, GateDelay: 3 * time.Second, KeepServicesServing: true}
}

// Request is one drain.
type Request struct {
	Node string
	// Kind is why, as a metric label (an interruption kind).
	Kind string
	// Deadline is when the node goes; zero for none. Run.Retarget
	// changes it while the drain runs.
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
	r := &running{clock: clk, runs: map[*schedule]bool{}}
	return &Drainer{client: client, pods: pods, events: events, metrics: newMetrics(reg, r.deadlineUsed), log: log, clock: clk, opts: opts, running: r}
}

// Run is a drain in progress.
type Run struct {
	sched *schedule
	done  chan struct{}
	res   Result
	err   error
}

// Retarget re-plans the drain for a new deadline: group ends, the grace
// periods of evictions still to come and override times follow it. Pods
// already evicted keep the grace they were given.
func (r *Run) Retarget(deadline time.Time) { r.sched.retarget(deadline) }

// Deadline is the deadline the drain works to now.
func (r *Run) Deadline() time.Time {
	d, _ := r.sched.current()
	return d
}

// Done is closed when the drain has ended.
func (r *Run) Done() <-chan struct{} { return r.done }

// Result is what the drain did, once Done is closed; the error says why it
// ended early.
func (r *Run) Result() (Result, error) {
	<-r.done
	return r.res, r.err
}

// Drain runs a drain to its end (see Start).
func (d *Drainer) Drain(ctx context.Context, req Request) (Result, error) {
	return d.Start(ctx, req).Result()
}

// Start drains req.Node in the background, following its plan (see Sort):
// after the load-balancer delay, it evicts the evictable pods group by
// group (non-critical, critical, then DaemonSet pods if asked), each group
// once the one before is gone, with grace periods clamped to the deadline.
// Under graceful-override, a pod its budget still protects at OverrideAt
// is deleted with the grace it has left. The drain ends with ErrDeadline
// (wrapped) if pods remain when the deadline, less half the margin,
// passes, and with ctx's error if ctx ends.
func (d *Drainer) Start(ctx context.Context, req Request) *Run {
	start := d.clock.Now()
	r := &Run{sched: newSchedule(start, req.Deadline, d.opts.DeadlineMargin), done: make(chan struct{})}
	d.metrics.draining.Inc()
	d.running.add(r.sched)
	go func() {
		defer close(r.done)
		r.res, r.err = d.drain(ctx, req, r.sched)
		r.res.Outcome = OutcomeOf(d.opts.DryRun, r.err)
		r.res.Deadline, _ = r.sched.current()
		d.running.remove(r.sched)
		d.metrics.draining.Dec()
		d.metrics.drains.WithLabelValues(r.res.Outcome.Label()).Inc()
		d.metrics.duration.WithLabelValues(req.Kind, r.res.Outcome.Label()).Observe(d.clock.Since(start).Seconds())
	}()
	return r
}

func (d *Drainer) drain(ctx context.Context, req Request, sched *schedule) (Result, error) {
	res := Result{Skipped: map[string]int{}}
	pods, err := d.pods.OnNode(req.Node)
	if err != nil {
		return res, fmt.Errorf("listing pods of node %s: %w", req.Node, err)
	}
	sorted := Sort(pods, d.opts)
	for rule, skipped := range sorted.Skipped {
		res.Skipped[rule] += len(skipped)
		d.metrics.skipped.WithLabelValues(rule).Add(float64(len(skipped)))
		if rule == RuleAnnotated {
			for _, p := range skipped {
				res.Kept = append(res.Kept, p.Namespace+"/"+p.Name)
				d.log.Info("pod left on the node by its annotation", "pod", p.Namespace+"/"+p.Name, "annotation", AnnotationSkipEviction)
			}
			slices.Sort(res.Kept)
		}
	}
	var evictable []*corev1.Pod
	for _, g := range sorted.Groups {
		evictable = append(evictable, g.Pods...)
	}
	// Pods already terminating are waited for with the first group.
	groups := sorted.Groups
	if len(groups) == 0 && len(sorted.Terminating) > 0 {
		groups = []Group{{}}
	}
	sched.plan(groups)
	if d.opts.DryRun {
		deadline, ends := sched.current()
		delay := LBDelay(d.opts.LBDelay, evictable, sched.start, deadline, d.opts.DeadlineMargin)
		for i, g := range groups {
			for _, p := range g.Pods {
				d.log.Info("dry run: would evict pod", "pod", p.Namespace+"/"+p.Name, "group", g.Name,
					"grace", ClampGrace(p, sched.start.Add(delay), ends[i], 0))
			}
		}
		return res, nil
	}
	// Nothing happens after the deadline less half the margin: give up
	// then, so the result is reported while the node still runs.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go sched.giveUp(ctx, d.clock, func() { cancel(ErrDeadline) })
	fail := func(err error) (Result, error) {
		res.Remaining = d.remaining(pods)
		d.metrics.overdue.Add(float64(len(res.Remaining)))
		if errors.Is(context.Cause(ctx), ErrDeadline) {
			return res, fmt.Errorf("%w: %d pods on %s", ErrDeadline, len(res.Remaining), req.Node)
		}
		return res, err
	}
	if err := d.lbDelay(ctx, req, sched, evictable); err != nil {
		return fail(err)
	}
	budgets := newBudgetWatch(ctx, d.client, d.clock, d.log)
	defer budgets.stop()
	endpoints := newEndpointWatch(ctx, d.client, d.clock)
	defer endpoints.stop()
	gates := newGates(d, endpoints)
	var spread *spread
	if d.opts.KeepServicesServing {
		spread = newSpread(d, req.Node, endpoints)
	}
	for i, g := range groups {
		wait := g.Pods
		if i == 0 {
			wait = append(slices.Clone(g.Pods), sorted.Terminating...)
		}
		n, overridden, err := d.drainGroup(ctx, req, sched, i, steps{budgets, gates, spread}, g.Pods, wait, false)
		res.Evicted += n
		res.Overridden = append(res.Overridden, overridden...)
		if err != nil {
			return fail(err)
		}
	}
	// A pod bound to the node just before it was held may not have been in
	// the cache the drain started from: ask the API server, and evict what
	// joined, a few rounds at most (a pod created straight onto the node,
	// as a controller may do again and again, is left to the deadline).
	handled := map[types.UID]bool{}
	for _, p := range pods {
		handled[p.UID] = true
	}
	for range lateRounds {
		late, err := d.lateArrivals(ctx, req.Node, handled)
		if err != nil {
			d.log.Warn("the node's pods could not be listed to find late arrivals; the cache said the drain is done", "node", req.Node, "err", err)
			break
		}
		if len(late) == 0 {
			break
		}
		d.metrics.late.Add(float64(len(late)))
		d.log.Info("pods joined the node as it was held: evicting them too", "node", req.Node, "pods", len(late))
		groups = append(groups, Group{Name: GroupLate, Pods: late})
		sched.plan(groups)
		n, overridden, err := d.drainGroup(ctx, req, sched, len(groups)-1, steps{budgets, gates, spread}, late, late, true)
		res.Evicted += n
		res.Overridden = append(res.Overridden, overridden...)
		pods = append(pods, late...)
		if err != nil {
			return fail(err)
		}
	}
	return res, nil
}

// lateRounds bounds the passes over pods that joined the node after the
// drain began.
const lateRounds = 3

// GroupLate names the group of pods that joined the node after the drain
// began.
const GroupLate = "late"

// lateArrivals lists the node's pods from the API server and returns the
// evictable ones handled does not hold, which it then holds.
func (d *Drainer) lateArrivals(ctx context.Context, node string, handled map[types.UID]bool) ([]*corev1.Pod, error) {
	list, err := d.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	var late []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if handled[p.UID] || p.Spec.NodeName != node {
			continue
		}
		handled[p.UID] = true
		if v, _ := Classify(p, d.opts.Self); v == Evict {
			late = append(late, p)
		}
	}
	return late, nil
}

// lbDelay waits, after the node left the load balancers, for them to stop
// sending it connections: the configured delay, shortened to the deadline
// (see LBDelay) and worked out again when the deadline changes. A node
// with nothing to evict waits too: the drain's end may release the
// instance (a lifecycle action completed), and its kube-proxy forwards
// what a node-level balancer still sends it to pods elsewhere.
func (d *Drainer) lbDelay(ctx context.Context, req Request, sched *schedule, evictable []*corev1.Pod) error {
	if d.opts.LBDelay <= 0 {
		return nil
	}
	logged := false
	for {
		deadline, changed := sched.deadlineAndChanges()
		delay := LBDelay(d.opts.LBDelay, evictable, sched.start, deadline, d.opts.DeadlineMargin)
		left := sched.start.Add(delay).Sub(d.clock.Now())
		if left <= 0 {
			return nil
		}
		if !logged {
			logged = true
			d.log.Info("waiting for load balancers to stop sending the node connections", "node", req.Node,
				"delay", delay, "configured", d.opts.LBDelay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-d.clock.After(left):
			return nil
		}
	}
}

// steps are what an eviction waits on besides the Eviction API: the
// budgets' changes, the serving gate, and the Services' endpoints (nil
// unless KeepServicesServing).
type steps struct {
	budgets *budgetWatch
	gates   *gates
	spread  *spread
}

// drainGroup evicts pods concurrently, each gone by its group's end (see
// GroupEnds), and waits until every pod of wait is gone. With
// evictFirst, every eviction has its answer before the wait begins: the
// pods may not be in the cache yet, which would take them for gone.
func (d *Drainer) drainGroup(ctx context.Context, req Request, sched *schedule, group int, st steps, pods, wait []*corev1.Pod, evictFirst bool) (int, []string, error) {
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		count      int
		overridden []string
		sem        = make(chan struct{}, d.opts.Concurrency)
	)
	// stop ends the evictions' retries once every pod is gone; an eviction
	// in flight then still gets its answer (and its Event) rather than
	// being cut off. cancel is for a drain that ends early.
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for _, p := range pods {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			case <-stop:
				return
			}
			defer func() { <-sem }()
			e := eviction{d: d, req: req, sched: sched, group: group, budgets: st.budgets, gates: st.gates, spread: st.spread, pod: p, stop: stop}
			out, err := e.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
			case out == evicted:
				count++
			case out == deleted:
				count++
				overridden = append(overridden, p.Namespace+"/"+p.Name)
			}
		})
	}
	if evictFirst {
		wg.Wait()
	}
	err := d.waitGone(ctx, wait)
	close(stop)
	if err != nil {
		cancel()
	}
	wg.Wait()
	return count, overridden, err
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
