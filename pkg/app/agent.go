package app

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall/lastcall/pkg/agent"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/providers/aws/imds"
)

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

	sourceHealth := health.NewSources(c.reg, env.Clock, o.SourceStaleAfter)
	sources, err := imds.Sources(imds.NewClient(o.Agent.IMDS), o.Agent.IMDS, sourceHealth, log, env.Clock)
	if err != nil {
		return err
	}
	for _, s := range sources {
		sourceHealth.Register(s.Name())
	}
	nodes := node.NewClient(env.Client, corelisters.NewNodeLister(nodeInformer.GetIndexer()).Get, env.Clock, o.DryRun, log.With("component", "node"))
	drainer := drain.New(env.Client, podIndex, c.recorder, c.reg, log.With("component", "drain"), env.Clock, o.Drain)
	ag := agent.New(agent.Options{Node: name, FallbackDeadline: o.FallbackDeadline},
		sources, nodes, drainer, c.recorder, sourceHealth.Synced(), c.reg, log.With("component", "agent"), env.Clock)
	return c.serve(ctx, env, sourceHealth.Check, []cache.SharedIndexInformer{nodeInformer, podInformer}, ag.Run)
}
