// Package app wires lastcall's components together from Options and runs
// them until the context ends.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/drainability"
	"github.com/lastcall/lastcall/pkg/kubemetrics"
	"github.com/lastcall/lastcall/pkg/logging"
	"github.com/lastcall/lastcall/pkg/server"
	"github.com/lastcall/lastcall/pkg/version"
)

// Env is what lastcall needs from the outside world. Run fills in what is
// nil from the options; tests pass their own.
type Env struct {
	Client   kubernetes.Interface
	Listener net.Listener
	Log      *slog.Logger
	Clock    clock.WithTicker
	// LogOut receives the logs when Log is nil.
	LogOut io.Writer
}

// Run runs lastcall in o.Mode until ctx ends.
func Run(ctx context.Context, o *Options, env Env) error {
	if env.Log == nil {
		log, err := logging.New(env.LogOut, o.LogFormat, o.LogLevel)
		if err != nil {
			return err
		}
		env.Log = log
	}
	env.Log.Info("starting lastcall", "version", version.Version, "mode", o.Mode, "dry_run", o.DryRun)
	if env.Client == nil {
		cfg, err := restConfig(o)
		if err != nil {
			return err
		}
		if env.Client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("creating Kubernetes client: %w", err)
		}
	}
	if env.Listener == nil {
		ln, err := net.Listen("tcp", o.ListenAddress)
		if err != nil {
			return fmt.Errorf("--listen-address %s: %w", o.ListenAddress, err)
		}
		env.Listener = ln
	}
	if env.Clock == nil {
		env.Clock = clock.RealClock{}
	}
	if o.Mode == ModeQueue {
		return runQueue(ctx, o, env)
	}
	return runAgent(ctx, o, env)
}

// common is what both modes share: metrics, Events, and running the
// informers, the server and the mode's main loop together.
type common struct {
	reg      *prometheus.Registry
	recorder record.EventRecorder
	shutdown func()
}

func newCommon(ctx context.Context, o *Options, env Env, host string) *common {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	if err := kubemetrics.Register(reg); err != nil {
		env.Log.Warn("Kubernetes request metrics unavailable", "err", err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: env.Client.CoreV1().Events("")})
	var recorder record.EventRecorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "lastcall", Host: host})
	if o.DryRun {
		recorder = &record.FakeRecorder{} // dry run: no Events either
	}
	return &common{reg: reg, recorder: recorder, shutdown: broadcaster.Shutdown}
}

// serve runs the informers, then main once they have synced, and the
// server throughout, until ctx ends or one of them fails.
func (c *common) serve(ctx context.Context, env Env, healthz server.Check, informers []cache.SharedIndexInformer, main func(context.Context) error) error {
	defer c.shutdown()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 2)
	synced := func() bool {
		for _, inf := range informers {
			if !inf.HasSynced() {
				return false
			}
		}
		return true
	}
	wg.Go(func() {
		errc <- server.Serve(ctx, env.Listener, server.Handler(c.reg, healthz, func() error {
			if !synced() {
				return errors.New("Kubernetes caches not synced yet")
			}
			return nil
		}), env.Log)
	})
	for _, inf := range informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced) {
		return nil
	}
	env.Log.Info("Kubernetes caches synced")
	wg.Go(func() { errc <- main(ctx) })
	select {
	case <-ctx.Done():
		env.Log.Info("shutting down")
		return nil
	case err := <-errc:
		return err
	}
}

// informer watches one kind of object of the core group, limited by a
// field selector. Informers are built directly rather than through an
// informer factory, which would link every API group's informers in.
func informer(c cache.Getter, resource string, obj runtime.Object, sel fields.Selector) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, sel)
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// planInformers watch what a plan of a drain reads besides pods: every
// PodDisruptionBudget and Service of the cluster (a node's pods may be in
// any namespace).
type planInformers struct {
	budgets, services cache.SharedIndexInformer
}

// Every agent holds them all, so only what a plan reads is kept.
func newPlanInformers(client kubernetes.Interface) (planInformers, error) {
	p := planInformers{
		budgets:  informer(client.PolicyV1().RESTClient(), "poddisruptionbudgets", &policyv1.PodDisruptionBudget{}, fields.Everything()),
		services: informer(client.CoreV1().RESTClient(), "services", &corev1.Service{}, fields.Everything()),
	}
	if err := p.budgets.SetTransform(slimBudget); err != nil {
		return p, fmt.Errorf("watching PodDisruptionBudgets: %w", err)
	}
	if err := p.services.SetTransform(slimService); err != nil {
		return p, fmt.Errorf("watching Services: %w", err)
	}
	return p, nil
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

func (p planInformers) all() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{p.budgets, p.services}
}

// drainabilityWiring is what the drainability controller reads and is told
// changes by.
type drainabilityWiring struct {
	nodes drainability.Nodes
	// nodeInformer, when set, tells of nodes coming and going (queue mode;
	// the agent evaluates its own node only).
	nodeInformer cache.SharedIndexInformer
	podInformer  cache.SharedIndexInformer
	pods         *drain.InformerIndex
	plan         planInformers
}

// newDrainability builds the drainability controller of a mode, planning
// drains against window.
func newDrainability(o *Options, w drainabilityWiring, window time.Duration, c *common, log *slog.Logger, env Env) *drainability.Controller {
	return drainability.New(drainability.Options{Window: window, Drain: o.Drain}, drainability.Sources{
		Nodes:    w.nodes,
		Pods:     w.pods,
		Budgets:  policylisters.NewPodDisruptionBudgetLister(w.plan.budgets.GetIndexer()),
		Services: corelisters.NewServiceLister(w.plan.services.GetIndexer()),
	}, c.recorder, c.reg, log.With("component", "drainability"), env.Clock)
}

// runDrainability subscribes ctrl to the informers' changes and runs it
// until ctx ends, then unsubscribes. The informers may be running already:
// a new subscription is told of every object they hold.
func runDrainability(ctx context.Context, ctrl *drainability.Controller, w drainabilityWiring, log *slog.Logger) {
	type subscription struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	subs := []subscription{{w.podInformer, ctrl.PodHandler()}, {w.plan.budgets, ctrl.NamespacedHandler()}, {w.plan.services, ctrl.NamespacedHandler()}}
	if w.nodeInformer != nil {
		subs = append(subs, subscription{w.nodeInformer, ctrl.NodeHandler()})
	}
	for _, s := range subs {
		reg, err := s.inf.AddEventHandler(s.h)
		if err != nil {
			log.Error("drainability not evaluated: subscribing to changes", "err", err)
			return
		}
		defer func() { _ = s.inf.RemoveEventHandler(reg) }()
	}
	_ = ctrl.Run(ctx)
}

// beside runs side in the background while main runs, and stops it (and
// waits for it) once main has returned: side outlives ctx until then, so
// it sees what main does while shutting down.
func beside(main func(context.Context) error, side func(context.Context)) func(context.Context) error {
	return func(ctx context.Context) error {
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			side(sctx)
		}()
		defer func() {
			stop()
			<-done
		}()
		return main(ctx)
	}
}

func restConfig(o *Options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration (--kubeconfig %q): %w", o.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = o.KubeQPS, o.KubeBurst
	// Every kind lastcall reads or writes is built in, so protobuf works:
	// it decodes with generated code instead of reflection, which costs
	// less CPU per watched object and less memory at rest.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.UserAgent = "lastcall/" + version.Version
	return cfg, nil
}

func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "lastcall", Name: "build_info", Help: "Always 1; the version of the running lastcall.",
	}, []string{"version"})
	g.WithLabelValues(version.Version).Set(1)
	return g
}
