// Package app wires lastcall's components together from Options and runs
// them until the context ends. It holds no logic of its own: each mode is
// a set of informers, the components that read them, and a main loop.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/pkg/kubeconn"
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

// Parse returns the options args and the environment give, with every
// known cloud, validated.
func Parse(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (*Options, error) {
	o := NewOptions(Providers()...)
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	fs.SetOutput(usage)
	o.AddFlags(fs)
	if err := flagenv.Parse(fs, args, lookupEnv); err != nil {
		return o, err
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("invalid configuration: %w", err)
	}
	return o, nil
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
		kubeconn.Bound(cfg, o.KubeTimeout, env.Log.With("component", "kubernetes"))
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
	reg := prometheus.NewRegistry()
	guard, err := newMetricsGuard(o, env, reg)
	if err != nil {
		return err
	}
	p, err := build(ctx, o, env, reg)
	if err != nil {
		return err
	}
	return p.serve(ctx, env, reg, guard)
}

// metricsGuard is how the metrics port is served: under --metrics-auth
// kubernetes, over TLS with /metrics behind the API server's reviews.
type metricsGuard struct {
	auth *server.Auth
	tls  *tls.Config
}

func newMetricsGuard(o *Options, env Env, reg prometheus.Registerer) (metricsGuard, error) {
	if o.MetricsAuth != MetricsAuthKubernetes {
		return metricsGuard{}, nil
	}
	cfg, err := server.SelfSignedTLS("lastcall-metrics")
	if err != nil {
		return metricsGuard{}, fmt.Errorf("--metrics-auth=%s: %w", o.MetricsAuth, err)
	}
	return metricsGuard{auth: server.NewAuth(env.Client, env.Clock, reg), tls: cfg}, nil
}

// process is a mode wired: what it watches, when it is alive and ready,
// and its main loop.
type process struct {
	*common
	informers []cache.SharedIndexInformer
	// liveness (/healthz) says whether lastcall's own loop is alive, and
	// nothing else: the kubelet restarts the process when it fails.
	liveness server.Check
	// readiness (/readyz), once the informers have synced, says whether
	// the process's dependencies answer: a metadata source, the queue.
	// Nil: the synced caches alone.
	readiness server.Check
	main      func(context.Context) error
}

// build wires o.Mode, registering its metrics on reg.
func build(ctx context.Context, o *Options, env Env, reg prometheus.Registerer) (*process, error) {
	switch o.Mode {
	case ModeQueue:
		return buildQueue(ctx, o, env, reg)
	case ModeDrainability:
		return buildDrainability(ctx, o, env, reg)
	}
	return buildAgent(ctx, o, env, reg)
}

// Metrics wires o's mode, registering on reg every metric it would expose,
// and runs nothing.
func Metrics(ctx context.Context, o *Options, env Env, reg prometheus.Registerer) error {
	if env.Clock == nil {
		env.Clock = clock.RealClock{}
	}
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	p, err := build(ctx, o, env, reg)
	if err != nil {
		return err
	}
	p.shutdown()
	return nil
}

// common is what every mode shares: metrics and Events.
type common struct {
	reg      prometheus.Registerer
	recorder record.EventRecorder
	shutdown func()
}

func newCommon(ctx context.Context, o *Options, env Env, host string, reg prometheus.Registerer) *common {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	if err := kubemetrics.Register(reg); err != nil {
		env.Log.Warn("Kubernetes request metrics unavailable", "err", err)
	}
	if err := kubeconn.Register(reg); err != nil {
		env.Log.Warn("Kubernetes connection metrics unavailable", "err", err)
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
func (p *process) serve(ctx context.Context, env Env, gatherer prometheus.Gatherer, guard metricsGuard) error {
	c, informers, main := p.common, p.informers, p.main
	defer c.shutdown()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // first: when main fails, the server and informers stop, and wg.Wait returns
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
		errc <- server.Serve(ctx, env.Listener, server.Handler(gatherer, p.liveness, func() error {
			if !synced() {
				return errors.New("Kubernetes caches not synced yet")
			}
			if p.readiness != nil {
				return p.readiness()
			}
			return nil
		}, guard.auth), guard.tls, env.Log)
	})
	for _, inf := range informers {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	// Each informer says when it has synced (no 100 ms polling, as
	// cache.WaitForCacheSync does, before the first notice can be read).
	for _, inf := range informers {
		select {
		case <-ctx.Done():
			return nil
		case <-inf.HasSyncedChecker().Done():
		}
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
// informer factory, which would link every API group's informers in. What
// no component reads is not kept: managed fields, and a node's list of
// images (often tens of kilobytes on a real node).
func informer(c cache.Getter, resource string, obj runtime.Object, sel fields.Selector) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, sel)
	inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	_ = inf.SetTransform(slimObject) // fails only once started
	return inf
}

// slimObject drops what lastcall never reads from a cached object.
func slimObject(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	if n, ok := obj.(*corev1.Node); ok {
		n.Status.Images = nil
	}
	return obj, nil
}

// onDelete calls gone with the name of every object the informer sees
// deleted.
func onDelete(inf cache.SharedIndexInformer, gone func(name string)) error {
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := meta(obj); err == nil {
			gone(m.GetName())
		}
	}})
	return err
}

func meta(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// beside runs side in the background while main runs, and stops it (and
// waits for it) once main has returned: side outlives ctx until then, so
// it sees what main does while shutting down.
func beside(main func(context.Context) error, sides ...func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		var wg sync.WaitGroup
		for _, side := range sides {
			wg.Go(func() { _ = side(sctx) })
		}
		defer func() {
			stop()
			wg.Wait()
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
