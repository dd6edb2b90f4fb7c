package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/agent"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/pkg/serving"
	"github.com/lastcall/lastcall/pkg/volumes"
)

// detectEvery paces rounds of cloud detection while no metadata service
// answers.
const detectEvery = 10 * time.Second

// detectTimeout bounds one round of detection.
const detectTimeout = 2 * time.Second

// LivenessPingBound is how soon the agent's main loop must answer a
// liveness ping. Its work between two pings is a few channel operations and
// map updates, none waiting on the API server or the metadata service: a
// loop that takes longer is stuck. The chart's liveness probe times out
// later (timeoutSeconds), so the probe reads why.
const LivenessPingBound = 2 * time.Second

// buildAgent wires the node agent: this node's metadata sources feeding
// its episode, with informers of this node and its pods only, so that an
// agent's cost does not grow with the cluster.
func buildAgent(ctx context.Context, o *Options, env Env, reg prometheus.Registerer) (*process, error) {
	name, log := o.Agent.NodeName, env.Log.With("node", o.Agent.NodeName)
	c := newCommon(ctx, o, env, name, reg)
	core := env.Client.CoreV1().RESTClient()
	nodeInformer := informer(core, "nodes", &corev1.Node{}, fields.OneTermEqualSelector("metadata.name", name))
	podInformer := informer(core, "pods", &corev1.Pod{}, fields.OneTermEqualSelector("spec.nodeName", name))
	k, err := newKernel(o, env, c, nodeInformer, podInformer, node.OwnerAgent, env.Log) // its logs name the node
	if err != nil {
		return nil, err
	}
	sourceHealth := health.NewSources(c.reg, env.Clock, o.Health.StaleAfter)
	// Liveness is the agent's own loop answering pings; while it waits
	// for a cloud to answer, or for the caches, it is not judged.
	live := health.NewLoop("agent", LivenessPingBound, env.Clock)
	ag := agent.New(agent.Options{Node: name, Pings: live.Pings(), RebalanceHoldTimeout: o.Agent.RebalanceHoldTimeout}, k.episodes, c.recorder, c.reg, log.With("component", "agent"), env.Clock)
	gate, err := servingKeeper(env, c, name, nodeInformer, k.pods, log)
	if err != nil {
		return nil, err
	}

	// Readiness: a cloud detected, and every source read once, and within
	// --source-stale-after since.
	var detectErr atomic.Pointer[error]
	notYet := errors.New("cloud not detected yet")
	detectErr.Store(&notYet)
	ready := func() error {
		if err := detectErr.Load(); err != nil {
			return *err
		}
		return sourceHealth.CheckRead()
	}
	doctor := newMetadataDoctor(c, name, log)
	// The node this agent serves, for alerts to name it: its metrics carry
	// the agent's pod, not the node.
	agentNode := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lastcall_agent_node", Help: "Always 1: the node this agent runs on and drains, for alerts and dashboards to name.",
	}, []string{"node"})
	agentNode.WithLabelValues(name).Set(1)
	c.reg.MustRegister(agentNode)
	main := func(ctx context.Context) error {
		p, err := detect(ctx, o, log, env.Clock, &detectErr, doctor)
		if err != nil {
			return nil // ctx ended while detecting
		}
		var providerID string // from the synced informer; "" while the node is not registered
		if n, err := corelisters.NewNodeLister(nodeInformer.GetIndexer()).Get(name); err == nil {
			providerID = n.Spec.ProviderID
		}
		sources, err := p.Sources(ctx, provider.Env{Node: name, ProviderID: providerID, PollInterval: o.Agent.PollInterval,
			Health: sourceHealth, Registry: c.reg, Log: log, Clock: env.Clock})
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name(), err)
		}
		for _, s := range sources {
			sourceHealth.Register(s.Name())
		}
		return live.Run(func() error { return ag.Run(ctx, sources, sourceHealth.Synced()) })
	}
	return &process{common: c, informers: []cache.SharedIndexInformer{nodeInformer, podInformer},
		liveness: live.Check, readiness: ready, main: beside(k.run(main), gate)}, nil
}

// servingKeeper keeps the serving readiness gate of the node's pods True
// while no drain of the node is in force (package serving); it runs
// beside the agent's main loop, looking again at every change of a pod
// or of the node.
func servingKeeper(env Env, c *common, name string, nodeInformer cache.SharedIndexInformer, pods *drain.InformerIndex, log *slog.Logger) (func(context.Context) error, error) {
	nodes := corelisters.NewNodeLister(nodeInformer.GetIndexer())
	draining := func() bool {
		n, err := nodes.Get(name)
		if err != nil {
			return false
		}
		s, err := node.StateOf(n)
		if err != nil {
			return true // unreadable: leave withdrawn pods withdrawn
		}
		return slices.ContainsFunc(s.Holds, func(h node.Hold) bool { return h.Action == interruption.ActionDrain })
	}
	k := serving.NewKeeper(env.Client, pods, name, draining, c.reg, log.With("component", "serving-gate"), env.Clock)
	if _, err := nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(any, any) { k.Poke() },
	}); err != nil {
		return nil, fmt.Errorf("watching the node for the serving gate: %w", err)
	}
	return func(ctx context.Context) error {
		k.Run(ctx) // in a dry run too: a gated pod is Ready only once it is set
		return nil
	}, nil
}

// kernel is what both front ends feed: the node's episodes, with the node
// client, the drainer and the notifier they use.
type kernel struct {
	episodes *episode.Manager
	notifier *notify.Notifier
	pods     *drain.InformerIndex
	nodes    *node.Client
}

// newKernel builds the episodes of owner over the informers' nodes and
// pods. A node the informer sees deleted ends its episode.
func newKernel(o *Options, env Env, c *common, nodeInformer, podInformer cache.SharedIndexInformer, owner node.Owner, log *slog.Logger) (*kernel, error) {
	podIndex, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		return nil, err
	}
	nodes := node.NewClient(env.Client, corelisters.NewNodeLister(nodeInformer.GetIndexer()).Get, env.Clock, owner, o.DryRun, log.With("component", "node")).
		WithTaintEffect(o.Episode.TaintEffect)
	drainer := drain.New(env.Client, podIndex, c.recorder, c.reg, log.With("component", "drain"), env.Clock, o.drainOptions())
	notifier, err := notify.New(o.Notify, c.reg, log.With("component", "notify"), env.Clock)
	if err != nil {
		return nil, err
	}
	episodes := episode.New(o.episodeOptions(), episode.Deps{Nodes: nodes, Drainer: episode.DrainerOf(drainer),
		Events: c.recorder, Notifier: notifier, Volumes: volumes.New(env.Client, c.reg, env.Clock), Registry: c.reg, Log: log.With("component", "episode"), Clock: env.Clock})
	if err := onDelete(nodeInformer, episodes.NodeGone); err != nil {
		return nil, fmt.Errorf("watching nodes: %w", err)
	}
	return &kernel{episodes: episodes, notifier: notifier, pods: podIndex, nodes: nodes}, nil
}

// run runs main with the episodes and the notifier's deliveries beside
// it. Once main has returned, the episodes stop (their drains with them),
// then the notifier flushes what is queued, for at most
// notify.FlushTimeout.
func (k *kernel) run(main func(context.Context) error) func(context.Context) error {
	return beside(beside(main, k.episodes.Run), k.notifier.Run)
}

// detect returns the provider --cloud names, or asks every provider's
// metadata service until one answers, a round every detectEvery; it fails
// only when ctx ends. status holds why no cloud is known yet.
func detect(ctx context.Context, o *Options, log *slog.Logger, clk clock.Clock, status *atomic.Pointer[error], doctor *metadataDoctor) (provider.Provider, error) {
	if p := o.provider(o.Agent.Cloud); p != nil {
		status.Store(nil)
		doctor.check(ctx, []provider.Provider{p})
		return p, nil
	}
	for {
		p, err := Detect(ctx, o)
		if err == nil {
			status.Store(nil)
			doctor.clear()
			log.Info("cloud detected", "cloud", p.Name())
			return p, nil
		}
		doctor.check(ctx, o.Providers)
		// Readiness names the clouds asked, not what their services
		// answered: that is in the log.
		why := fmt.Errorf("no cloud metadata service answered (asked %s; the log says what each answered)", strings.Join(o.providerNames(), ", "))
		status.Store(&why)
		log.Error("no cloud metadata service answered; retrying", "err", err, "retry_in", detectEvery)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-clk.After(detectEvery):
		}
	}
}

// Detect asks every provider's metadata service at once, each bounded by
// detectTimeout, and returns the first in order of preference that
// answered; when none did, the error says what each one answered.
func Detect(ctx context.Context, o *Options) (provider.Provider, error) {
	providers := o.Providers
	answers := make([]chan error, len(providers))
	for i, p := range providers {
		answers[i] = make(chan error, 1)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, detectTimeout)
			defer cancel()
			answers[i] <- p.Detect(pctx)
		}()
	}
	var errs []error
	for i, p := range providers {
		err := <-answers[i]
		if err == nil {
			return p, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
	}
	return nil, fmt.Errorf("no cloud metadata service answered (set --cloud to choose one): %w", errors.Join(errs...))
}

// metadataDoctor says, in a Warning Event on the node, in the log and in
// lastcall_metadata_problem, why a cloud's metadata service does not
// answer as it should, when a provider can tell (provider.Diagnoser).
type metadataDoctor struct {
	recorder record.EventRecorder
	node     string
	log      *slog.Logger
	gauge    *prometheus.GaugeVec
	told     map[string]bool
}

func newMetadataDoctor(c *common, node string, log *slog.Logger) *metadataDoctor {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lastcall_metadata_problem",
		Help: "1 while the agent knows why its cloud's metadata service does not answer as it should, by cloud and cause " +
			"(imds-hop-limit: the IMDSv2 token does not reach the pod); the node's MetadataUnreachable Event says the fix.",
	}, []string{"cloud", "cause"})
	c.reg.MustRegister(g)
	return &metadataDoctor{recorder: c.recorder, node: node, log: log, gauge: g, told: map[string]bool{}}
}

// check asks each provider that can tell; what one finds is said once.
func (d *metadataDoctor) check(ctx context.Context, providers []provider.Provider) {
	for _, p := range providers {
		dg, ok := p.(provider.Diagnoser)
		if !ok {
			continue
		}
		cause, advice := dg.Diagnose(ctx)
		if cause == "" {
			continue
		}
		d.gauge.WithLabelValues(p.Name(), cause).Set(1)
		if key := p.Name() + "/" + cause; !d.told[key] {
			d.told[key] = true
			d.log.Error("the cloud's metadata service does not answer as it should", "cloud", p.Name(), "cause", cause, "advice", advice)
			d.recorder.Eventf(node.Ref(d.node), corev1.EventTypeWarning, "MetadataUnreachable", "%s (%s): %s", p.Name(), cause, advice)
		}
	}
}

// clear says the problems are over: a cloud answered.
func (d *metadataDoctor) clear() { d.gauge.Reset() }
