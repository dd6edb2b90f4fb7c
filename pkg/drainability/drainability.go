// Package drainability keeps asking what would stand in the way of draining
// each node right now: it plans the drain (package plan) against the
// deadline window an interruption would give, exports the blockers as a
// gauge, and records an Event on the node when they change, so operators
// can act before an interruption rather than after.
package drainability

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/plan"
)

// The Events recorded on a node.
const (
	// ReasonBlocked (Warning): something now blocks or degrades a drain.
	ReasonBlocked = "DrainBlocked"
	// ReasonUnblocked (Normal): nothing does any more.
	ReasonUnblocked = "DrainUnblocked"
)

// Defaults of Options.
const (
	DefaultDebounce = 2 * time.Second
	DefaultResync   = 30 * time.Second
)

// podsPerReason bounds the pods an Event names for each reason.
const podsPerReason = 5

// maxMessage bounds an Event's message.
const maxMessage = 1024

// Options tune a Controller.
type Options struct {
	// Window is the time from now to the deadline a drain is planned
	// against: the notice the cloud would give.
	Window time.Duration
	// Drain are the drain's options, as the real drain would use them.
	Drain drain.Options
	// Debounce is the least time between two evaluation passes; changes
	// within it are coalesced.
	Debounce time.Duration
	// Resync is how often every node is evaluated even without a change
	// (budgets' allowed disruptions are status the watch delivers, but a
	// pass now and then bounds any miss).
	Resync time.Duration
}

// Pods lists a node's pods (drain.InformerIndex does).
type Pods interface {
	OnNode(node string) ([]*corev1.Pod, error)
}

// Nodes lists the names of the nodes to evaluate.
type Nodes func() ([]string, error)

// Sources are what a Controller reads, all from informers' caches.
type Sources struct {
	Nodes    Nodes
	Pods     Pods
	Budgets  policylisters.PodDisruptionBudgetLister
	Services corelisters.ServiceLister
	// InNamespace, if set, lists the pods of a namespace wherever they
	// run: a plan then knows which Services have no ready endpoint off the
	// node.
	InNamespace func(namespace string) ([]*corev1.Pod, error)
	// Draining, if set, says whether a drain of the node is in progress:
	// the gauge is kept then, but no Event is recorded (the drain's own
	// Events say what blocks it).
	Draining func(node string) bool
}

// Controller evaluates the drainability of nodes as their pods, and the
// budgets and Services of those pods' namespaces, change.
type Controller struct {
	opts    Options
	src     Sources
	events  record.EventRecorder
	metrics *metrics
	log     *slog.Logger
	clock   clock.WithTicker

	pending pending
	// known is every node evaluated, by name; only Run's goroutine uses it.
	known map[string]*nodeState
}

// nodeState is what the last evaluation of a node found.
type nodeState struct {
	// namespaces of the node's pods: a budget or Service changing in one
	// of them concerns the node.
	namespaces map[string]bool
	// blockers is the set of (reason, pod) found, as a comparable key.
	blockers string
}

// New returns a Controller and registers its metrics on reg.
func New(o Options, src Sources, events record.EventRecorder, reg prometheus.Registerer, log *slog.Logger, clk clock.WithTicker) *Controller {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	c := &Controller{opts: o, src: src, events: events, metrics: newMetrics(reg), log: log, clock: clk, known: map[string]*nodeState{}}
	c.pending.b, c.pending.wake = newBatch(), make(chan struct{}, 1)
	return c
}

// PodHandler marks the nodes of changed pods for evaluation; with
// Sources.InNamespace, also the nodes running pods of their namespace,
// since a pod that turns Ready elsewhere changes which Services a node
// holds every ready endpoint of.
func (c *Controller) PodHandler() cache.ResourceEventHandler {
	return changes(func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return
		}
		c.pending.node(p.Spec.NodeName)
		if c.src.InNamespace != nil {
			c.pending.namespace(p.Namespace)
		}
	})
}

// NamespacedHandler marks the nodes running pods in the namespace of a
// changed PodDisruptionBudget or Service for evaluation.
func (c *Controller) NamespacedHandler() cache.ResourceEventHandler {
	return changes(func(obj any) {
		if m, err := meta.Accessor(obj); err == nil {
			c.pending.namespace(m.GetNamespace())
		}
	})
}

// NodeHandler marks added and deleted nodes for evaluation (a deleted
// node's series are removed), and nodes whose lastcall state changed (a
// drain started or ended).
func (c *Controller) NodeHandler() cache.ResourceEventHandler {
	mark := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			c.pending.node(n.Name)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { mark(obj) },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := cur.(*corev1.Node)
			if ok1 && ok2 && o.Annotations[node.AnnotationState] != n.Annotations[node.AnnotationState] {
				mark(n)
			}
		},
		DeleteFunc: func(obj any) { mark(unwrap(obj)) },
	}
}

// changes calls mark with every object added or deleted, and with both
// versions of an updated one (a pod just bound to a node has none in its
// old version); resyncs, which change nothing, are left out.
func changes(mark func(any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { mark(obj) },
		UpdateFunc: func(old, cur any) {
			if o, err := meta.Accessor(old); err == nil {
				if n, err := meta.Accessor(cur); err == nil && o.GetResourceVersion() == n.GetResourceVersion() {
					return // a resync: nothing changed
				}
			}
			mark(old)
			mark(cur)
		},
		DeleteFunc: func(obj any) { mark(unwrap(obj)) },
	}
}

func unwrap(obj any) any {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// Run evaluates every node, then again what changes concern, at most once
// per Debounce, and every node each Resync, until ctx ends. Call it once
// the informers have synced.
func (c *Controller) Run(ctx context.Context) error {
	resync := c.clock.NewTicker(c.opts.Resync)
	defer resync.Stop()
	c.pending.everything()
	var last time.Time
	for {
		if wait := c.opts.Debounce - c.clock.Since(last); !last.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-c.clock.After(wait):
			}
		}
		last = c.clock.Now()
		c.pass(c.pending.take())
		select {
		case <-ctx.Done():
			return nil
		case <-c.pending.wake:
		case <-resync.C():
			c.pending.everything()
		}
	}
}

// pass evaluates the nodes a batch of changes concerns, and forgets the
// nodes that are gone.
func (c *Controller) pass(b batch) {
	names, err := c.src.Nodes()
	if err != nil {
		c.log.Error("listing nodes", "err", err)
		return
	}
	exists := map[string]bool{}
	for _, n := range names {
		exists[n] = true
	}
	todo := map[string]bool{}
	if b.all {
		for _, n := range names {
			todo[n] = true
		}
		for n := range c.known {
			todo[n] = true // those gone are forgotten below
		}
	}
	for n := range b.nodes {
		todo[n] = true
	}
	for n, st := range c.known {
		for ns := range b.namespaces {
			if st.namespaces[ns] {
				todo[n] = true
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(todo)) {
		if !exists[n] {
			c.forget(n)
			continue
		}
		if err := c.evaluate(n); err != nil {
			c.log.Error("evaluating drainability", "node", n, "err", err)
		}
	}
}

// forget removes a node that is gone.
func (c *Controller) forget(name string) {
	if _, ok := c.known[name]; !ok {
		return
	}
	delete(c.known, name)
	c.metrics.blockers.DeletePartialMatch(prometheus.Labels{"node": name})
}

// evaluate plans a drain of the node now, sets its gauge, and records an
// Event when its blockers changed.
func (c *Controller) evaluate(name string) error {
	pods, err := c.src.Pods.OnNode(name)
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	st := &nodeState{namespaces: map[string]bool{}}
	for _, p := range pods {
		st.namespaces[p.Namespace] = true
	}
	in := plan.Inputs{Node: name, Now: c.clock.Now(), Pods: pods}
	in.Deadline = in.Now.Add(c.opts.Window)
	if c.src.InNamespace != nil {
		in.ReadyElsewhere = plan.ReadyElsewhere(name, c.src.InNamespace)
	}
	for _, ns := range slices.Sorted(maps.Keys(st.namespaces)) {
		budgets, err := c.src.Budgets.PodDisruptionBudgets(ns).List(labels.Everything())
		if err != nil {
			return fmt.Errorf("listing PodDisruptionBudgets of %s: %w", ns, err)
		}
		services, err := c.src.Services.Services(ns).List(labels.Everything())
		if err != nil {
			return fmt.Errorf("listing Services of %s: %w", ns, err)
		}
		in.Budgets = append(in.Budgets, budgets...)
		in.Services = append(in.Services, services...)
	}
	p := plan.Build(in, c.opts.Drain)
	c.metrics.evaluations.Inc()
	for reason, n := range p.Counts() {
		c.metrics.blockers.WithLabelValues(name, string(reason)).Set(float64(n))
	}
	found := blockersOf(p)
	st.blockers = found.key()
	if c.src.Draining != nil && c.src.Draining(name) {
		// The drain tells what blocks it; what it leaves is judged from
		// nothing once it is over.
		st.blockers = ""
		c.known[name] = st
		return nil
	}
	prev, seen := c.known[name]
	c.known[name] = st
	switch {
	case seen && prev.blockers == st.blockers:
	case len(found) > 0:
		c.log.Info("a drain now would be blocked or degraded", "node", name, "blockers", st.blockers)
		c.events.Event(node.Ref(name), corev1.EventTypeWarning, ReasonBlocked, found.message())
	case seen:
		c.log.Info("nothing blocks a drain now", "node", name)
		c.events.Event(node.Ref(name), corev1.EventTypeNormal, ReasonUnblocked, "a drain now would be clean: nothing blocks or degrades it")
	}
	return nil
}
