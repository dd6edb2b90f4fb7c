package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"cloud.google.com/go/compute/metadata"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall/lastcall/pkg/agent"
	"github.com/lastcall/lastcall/pkg/cloud"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/providers/aws/imds"
	"github.com/lastcall/lastcall/providers/azure"
	"github.com/lastcall/lastcall/providers/gce"
)

// detectEvery paces retries of cloud detection while no metadata service
// answers.
const detectEvery = 10 * time.Second

// runAgent runs the node agent: this node's metadata sources, and informers
// scoped to this node and its pods.
func runAgent(ctx context.Context, o *Options, env Env) error {
	name, log := o.Agent.NodeName, env.Log.With("node", o.Agent.NodeName)
	c := newCommon(ctx, o, env, name)
	core := env.Client.CoreV1().RESTClient()
	nodeInformer := informer(core, "nodes", &corev1.Node{}, fields.OneTermEqualSelector("metadata.name", name))
	podInformer := informer(core, "pods", &corev1.Pod{}, fields.OneTermEqualSelector("spec.nodeName", name))
	podIndex, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		return err
	}
	planInformers, err := newPlanInformers(env.Client)
	if err != nil {
		return err
	}
	drainable := drainabilityWiring{
		nodes:       func() ([]string, error) { return []string{name}, nil },
		podInformer: podInformer, pods: podIndex, plan: planInformers,
	}
	nodes := node.NewClient(env.Client, corelisters.NewNodeLister(nodeInformer.GetIndexer()).Get, env.Clock, o.DryRun, log.With("component", "node"))
	drainer := drain.New(env.Client, podIndex, c.recorder, c.reg, log.With("component", "drain"), env.Clock, o.Drain)
	sourceHealth := health.NewSources(c.reg, env.Clock, o.SourceStaleAfter)
	notifier, err := notify.New(o.Notify, c.reg, log.With("component", "notify"), env.Clock)
	if err != nil {
		return err
	}

	// Until a cloud is known, /healthz says so.
	var detectErr atomic.Pointer[error]
	notYet := errors.New("cloud not detected yet")
	detectErr.Store(&notYet)
	healthz := func() error {
		if err := detectErr.Load(); err != nil {
			return *err
		}
		return sourceHealth.Check()
	}
	main := func(ctx context.Context) error {
		which, err := detectCloud(ctx, o, log, &detectErr)
		if err != nil {
			return nil // ctx ended while detecting
		}
		sources, err := cloudSources(which, o, sourceHealth, log, env)
		if err != nil {
			return err
		}
		for _, s := range sources {
			sourceHealth.Register(s.Name())
		}
		ag := agent.New(agent.Options{Node: name, FallbackDeadline: o.FallbackDeadline, Notifier: notifier},
			sources, nodes, drainer, c.recorder, sourceHealth.Synced(), c.reg, log.With("component", "agent"), env.Clock)
		ctrl := newDrainability(o, drainable, noticeWindow(which, o), c, log, env)
		return beside(ag.Run, func(ctx context.Context) { runDrainability(ctx, ctrl, drainable, log) })(ctx)
	}
	informers := append([]cache.SharedIndexInformer{nodeInformer, podInformer}, planInformers.all()...)
	return c.serve(ctx, env, healthz, informers, withNotifier(notifier, main))
}

// withNotifier runs the notifier's delivery loop beside main. Once main has
// returned (its drains stopped), the loop is stopped and flushes what is
// queued, for at most notify.FlushTimeout, before this returns.
func withNotifier(n *notify.Notifier, main func(context.Context) error) func(context.Context) error {
	return beside(main, func(ctx context.Context) { _ = n.Run(ctx) })
}

// detectCloud returns --cloud, or asks every metadata service until one
// answers, retrying every detectEvery; it fails only when ctx ends.
func detectCloud(ctx context.Context, o *Options, log *slog.Logger, status *atomic.Pointer[error]) (string, error) {
	if o.Agent.Cloud != "auto" {
		status.Store(nil)
		return o.Agent.Cloud, nil
	}
	client := &http.Client{}
	ep := cloud.Endpoints{AWS: o.Agent.IMDS.Endpoint, Azure: o.Agent.Azure.Endpoint}
	for {
		which, err := cloud.Detect(ctx, client, ep, 2*time.Second)
		if err == nil {
			status.Store(nil)
			log.Info("cloud detected", "cloud", which)
			return which, nil
		}
		status.Store(&err)
		log.Error("no cloud metadata service answered; retrying", "err", err, "retry_in", detectEvery)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(detectEvery):
		}
	}
}

// awsSpotNotice is the notice of an EC2 spot interruption.
const awsSpotNotice = 2 * time.Minute

// azureEvictionNotice is the least notice of an Azure Spot eviction or
// Preempt scheduled event.
const azureEvictionNotice = 30 * time.Second

// noticeWindow is the notice an interruption of this node would most likely
// give, as its cloud goes: the drain the drainability gauge plans against.
func noticeWindow(which string, o *Options) time.Duration {
	switch which {
	case cloud.AWS:
		return awsSpotNotice
	case cloud.GCE:
		return o.Agent.GCE.SpotDeadline
	case cloud.Azure:
		return azureEvictionNotice
	}
	return o.FallbackDeadline
}

func cloudSources(which string, o *Options, h *health.Sources, log *slog.Logger, env Env) ([]interruption.Source, error) {
	switch which {
	case cloud.AWS:
		return imds.Sources(imds.NewClient(o.Agent.IMDS), o.Agent.IMDS, h, log, env.Clock)
	case cloud.GCE:
		return gce.Sources(metadata.NewClient(&http.Client{}), o.Agent.GCE, h, log, env.Clock)
	case cloud.Azure:
		return azure.Sources(&http.Client{Timeout: 5 * time.Second}, o.Agent.Azure, h, log, env.Clock)
	}
	return nil, fmt.Errorf("unknown cloud %q", which)
}
