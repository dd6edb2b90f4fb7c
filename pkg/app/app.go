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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/agent"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/logging"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/server"
	"github.com/lastcall/lastcall/pkg/version"
	"github.com/lastcall/lastcall/providers/aws/imds"
)

// Env is what the agent needs from the outside world. Run fills in what is
// nil from the options; tests pass their own.
type Env struct {
	Client   kubernetes.Interface
	Listener net.Listener
	Log      *slog.Logger
	Clock    clock.WithTicker
	// LogOut receives the logs when Log is nil.
	LogOut io.Writer
}

// Run runs the node agent until ctx ends.
func Run(ctx context.Context, o *Options, env Env) error {
	if env.Log == nil {
		log, err := logging.New(env.LogOut, o.LogFormat, o.LogLevel)
		if err != nil {
			return err
		}
		env.Log = log
	}
	log := env.Log
	log.Info("starting lastcall", "version", version.Version, "node", o.NodeName, "dry_run", o.DryRun)
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
	return run(ctx, o, env.Client, env.Listener, log, env.Clock)
}

// run runs the agent with its outside world in place.
func run(ctx context.Context, o *Options, client kubernetes.Interface, ln net.Listener, log *slog.Logger, clk clock.WithTicker) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo())

	// Informers scoped to this node: its Node object and its pods. They are
	// built directly rather than through an informer factory, which would
	// link every API group's informers into the binary.
	nodeInformer := scopedInformer(client.CoreV1().RESTClient(), "nodes", &corev1.Node{},
		fields.OneTermEqualSelector("metadata.name", o.NodeName))
	podInformer := scopedInformer(client.CoreV1().RESTClient(), "pods", &corev1.Pod{},
		fields.OneTermEqualSelector("spec.nodeName", o.NodeName))
	nodeLister := corelisters.NewNodeLister(nodeInformer.GetIndexer())
	podIndex, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		return err
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(eventScheme(), corev1.EventSource{Component: "lastcall", Host: o.NodeName})
	if o.DryRun {
		recorder = &record.FakeRecorder{} // dry run: no Events either
	}

	sourceHealth := health.NewSources(reg, clk, o.SourceStaleAfter)
	sources, err := imds.Sources(imds.NewClient(o.IMDS), o.IMDS, sourceHealth, log, clk)
	if err != nil {
		return err
	}
	for _, s := range sources {
		sourceHealth.Register(s.Name())
	}

	nodes := node.NewClient(client, nodeLister.Get, clk, o.DryRun, log.With("component", "node"))
	drainer := drain.New(client, podIndex, recorder, reg, log.With("component", "drain"), clk, o.Drain)
	ag := agent.New(agent.Options{Node: o.NodeName, FallbackDeadline: o.FallbackDeadline},
		sources, nodes, drainer, recorder, sourceHealth.Synced(), reg, log.With("component", "agent"), clk)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, 2)
	synced := func() bool { return nodeInformer.HasSynced() && podInformer.HasSynced() }
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- server.Serve(ctx, ln, server.Handler(reg, sourceHealth.Check, func() error {
			if !synced() {
				return errors.New("Kubernetes node and pod caches not synced yet")
			}
			return nil
		}), log)
	}()

	for _, inf := range []cache.SharedIndexInformer{nodeInformer, podInformer} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inf.RunWithContext(ctx)
		}()
	}
	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(), synced) {
		return ctx.Err()
	}
	log.Info("Kubernetes caches synced", "took", time.Since(start))

	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- ag.Run(ctx)
	}()
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-errc:
		cancel()
		return err
	}
}

// scopedInformer watches one kind of object of the core group, limited by a
// field selector.
func scopedInformer(c cache.Getter, resource string, obj runtime.Object, sel fields.Selector) cache.SharedIndexInformer {
	lw := cache.NewListWatchFromClient(c, resource, metav1.NamespaceAll, sel)
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
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
