package app

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/drainability"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/node"
)

// buildDrainability wires every node's drainability, and nothing else: the
// one place that watches the cluster's PodDisruptionBudgets and Services
// when the agents run without a queue processor.
func buildDrainability(ctx context.Context, o *Options, env Env, reg prometheus.Registerer) (*process, error) {
	log := env.Log.With("mode", ModeDrainability)
	c := newCommon(ctx, o, env, o.PodName, reg)
	core := env.Client.CoreV1().RESTClient()
	nodeInformer := informer(core, "nodes", &corev1.Node{}, fields.Everything())
	podInformer := informer(core, "pods", &corev1.Pod{}, fields.AndSelectors(
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed))))
	podIndex, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		return nil, err
	}
	window := drainabilityWindow(ctx, o, log)
	d, err := newClusterDrainability(o, env, c, nodeInformer, podInformer, podIndex, window, log)
	if err != nil {
		return nil, err
	}
	informers := append([]cache.SharedIndexInformer{nodeInformer, podInformer}, d.informers()...)
	return &process{common: c, informers: informers, liveness: d.alive.Check, main: d.run}, nil
}

// drainabilityWindow is the notice drains are planned against: that of
// the cloud --cloud names, or detected in one round; without one, the
// fallback deadline.
func drainabilityWindow(ctx context.Context, o *Options, log *slog.Logger) time.Duration {
	if p := o.provider(o.Agent.Cloud); p != nil {
		return p.NoticeWindow()
	}
	p, err := Detect(ctx, o)
	if err != nil {
		log.Warn("no cloud detected; planning drains against the fallback deadline", "window", o.Episode.FallbackDeadline, "err", err)
		return o.Episode.FallbackDeadline
	}
	log.Info("cloud detected", "cloud", p.Name(), "window", p.NoticeWindow())
	return p.NoticeWindow()
}

// drainabilityLivenessBound is how long the drainability controller may
// go without a pass before it is taken for stuck: it passes over every
// node at least each resync, reading only its caches, so three resyncs
// missed cannot be the API server's doing.
const drainabilityLivenessBound = 3 * drainability.DefaultResync

// clusterDrainability is the drainability of every node, from informers of
// every node, pod, PodDisruptionBudget and Service.
type clusterDrainability struct {
	ctrl              *drainability.Controller
	nodes, pods       cache.SharedIndexInformer
	budgets, services cache.SharedIndexInformer
	// alive beats at the start of every pass: the process's liveness.
	alive *health.Heartbeat
}

func newClusterDrainability(o *Options, env Env, c *common, nodes, pods cache.SharedIndexInformer, podIndex drainability.Pods,
	window time.Duration, log *slog.Logger) (*clusterDrainability, error) {
	d := &clusterDrainability{
		nodes:    nodes,
		pods:     pods,
		budgets:  informer(env.Client.PolicyV1().RESTClient(), "poddisruptionbudgets", &policyv1.PodDisruptionBudget{}, fields.Everything()),
		services: informer(env.Client.CoreV1().RESTClient(), "services", &corev1.Service{}, fields.Everything()),
		alive:    health.NewHeartbeat("drainability", drainabilityLivenessBound, env.Clock),
	}
	// Only what a plan reads is kept.
	if err := d.budgets.SetTransform(slimBudget); err != nil {
		return nil, fmt.Errorf("watching PodDisruptionBudgets: %w", err)
	}
	if err := d.services.SetTransform(slimService); err != nil {
		return nil, fmt.Errorf("watching Services: %w", err)
	}
	nodeLister := corelisters.NewNodeLister(nodes.GetIndexer())
	d.ctrl = drainability.New(drainability.Options{Window: window, Drain: o.drainOptions()}, drainability.Sources{
		Nodes: func() ([]string, error) {
			d.alive.Beat() // each pass starts by listing the nodes
			return nodeNames(nodeLister)
		},
		Pods:     podIndex,
		Budgets:  policylisters.NewPodDisruptionBudgetLister(d.budgets.GetIndexer()),
		Services: corelisters.NewServiceLister(d.services.GetIndexer()),
		InNamespace: func(ns string) ([]*corev1.Pod, error) {
			return corelisters.NewPodLister(pods.GetIndexer()).Pods(ns).List(labels.Everything())
		},
		Draining: func(name string) bool {
			n, err := nodeLister.Get(name)
			if err != nil {
				return false
			}
			st, err := node.StateOf(n)
			return err == nil && st.Draining()
		},
	}, c.recorder, c.reg, log.With("component", "drainability"), env.Clock)
	return d, nil
}

func (d *clusterDrainability) informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{d.budgets, d.services}
}

// run subscribes the controller to the informers' changes and runs it
// until ctx ends.
func (d *clusterDrainability) run(ctx context.Context) error {
	subs := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{{d.pods, d.ctrl.PodHandler()}, {d.budgets, d.ctrl.NamespacedHandler()}, {d.services, d.ctrl.NamespacedHandler()}, {d.nodes, d.ctrl.NodeHandler()}}
	for _, s := range subs {
		reg, err := s.inf.AddEventHandler(s.h)
		if err != nil {
			return fmt.Errorf("drainability: subscribing to changes: %w", err)
		}
		defer func() { _ = s.inf.RemoveEventHandler(reg) }()
	}
	return d.ctrl.Run(ctx)
}

// nodeNames lists the names of every node.
func nodeNames(l corelisters.NodeLister) ([]string, error) {
	nodes, err := l.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names, nil
}

// slimBudget keeps a budget's identity, selector and status.
func slimBudget(obj any) (any, error) {
	if b, ok := obj.(*policyv1.PodDisruptionBudget); ok {
		return &policyv1.PodDisruptionBudget{ObjectMeta: slimMeta(b.ObjectMeta), Spec: b.Spec, Status: b.Status}, nil
	}
	return obj, nil
}

// slimService keeps a Service's identity and selector.
func slimService(obj any) (any, error) {
	if s, ok := obj.(*corev1.Service); ok {
		return &corev1.Service{ObjectMeta: slimMeta(s.ObjectMeta), Spec: corev1.ServiceSpec{Selector: s.Spec.Selector}}, nil
	}
	return obj, nil
}

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Generation: m.Generation}
}
