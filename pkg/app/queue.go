package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/providers/aws/awsconfig"
	"github.com/lastcall/lastcall/providers/aws/instances"
	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/messages"
	"github.com/lastcall/lastcall/providers/aws/processor"
	"github.com/lastcall/lastcall/providers/aws/queue"
)

// runQueue runs the queue processor: SQS in, every node of the cluster
// drained through per-node leases, lifecycle actions completed.
func runQueue(ctx context.Context, o *Options, env Env) error {
	q, log := o.Queue, env.Log.With("queue", o.Queue.URL)
	holder := o.PodName
	if holder == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --pod-name and no hostname for the lease holder identity: %w", err)
		}
		holder = h
	}
	c := newCommon(ctx, o, env, holder)
	aws := awsconfig.Options{Region: q.Region, Endpoint: q.Endpoint}
	cfg, err := awsconfig.Load(ctx, aws)
	if err != nil {
		return fmt.Errorf("loading AWS configuration: %w", err)
	}

	core := env.Client.CoreV1().RESTClient()
	nodeInformer := informer(core, "nodes", &corev1.Node{}, fields.Everything())
	// Finished pods need no drain; leaving them out keeps the cache small.
	podInformer := informer(core, "pods", &corev1.Pod{}, fields.AndSelectors(
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed))))
	mapper, err := instances.NewMapper(nodeInformer, aws.EC2(cfg), q.ManagedTag)
	if err != nil {
		return err
	}
	podIndex, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		return err
	}
	planInformers, err := newPlanInformers(env.Client)
	if err != nil {
		return err
	}
	nodeLister := corelisters.NewNodeLister(nodeInformer.GetIndexer())
	drainable := drainabilityWiring{
		nodes:        func() ([]string, error) { return nodeNames(nodeLister) },
		nodeInformer: nodeInformer, podInformer: podInformer, pods: podIndex, plan: planInformers,
	}
	// A spot notice gives 2 minutes, as does the fallback deadline of
	// lifecycle hooks and state changes by default.
	ctrl := newDrainability(o, drainable, o.FallbackDeadline, c, log, env)

	sourceHealth := health.NewSources(c.reg, env.Clock, o.SourceStaleAfter)
	sourceHealth.Register(queue.SourceName)
	nodes := node.NewClient(env.Client, nodeLister.Get, env.Clock, o.DryRun, log.With("component", "node"))
	drainer := drain.New(env.Client, podIndex, c.recorder, c.reg, log.With("component", "drain"), env.Clock, o.Drain)
	leases := lease.NewLocker(env.Client, q.LeaseNamespace, holder, q.LeaseDuration, env.Clock, log.With("component", "lease"))
	notifier, err := notify.New(o.Notify, c.reg, log.With("component", "notify"), env.Clock)
	if err != nil {
		return err
	}
	completer := lifecycle.NewCompleter(aws.AutoScaling(cfg), c.reg, log.With("component", "lifecycle"), env.Clock, q.HeartbeatInterval)
	proc := processor.New(processor.Options{
		FallbackDeadline: o.FallbackDeadline, FailureResult: q.FailureResult,
		RetryAfter: q.RetryAfter, LaunchRetryAfter: q.RetryAfter, Notifier: notifier,
	}, mapper, nodes, drainer, leases, lifecycleStep{completer}, c.recorder, c.reg, log.With("component", "processor"), env.Clock)
	consumer := queue.NewConsumer(aws.SQS(cfg), proc, queue.Options{
		QueueURL: q.URL, Workers: q.Workers, WaitTime: queueWait, Visibility: q.Visibility,
		MaxReceives: q.MaxReceives, Health: sourceHealth,
	}, c.reg, log.With("component", "consumer"), env.Clock)
	log.Info("queue processor ready", "holder", holder, "workers", q.Workers, "managed_tag", q.ManagedTag)
	informers := append([]cache.SharedIndexInformer{nodeInformer, podInformer}, planInformers.all()...)
	main := beside(consumer.Run, func(ctx context.Context) { runDrainability(ctx, ctrl, drainable, log) })
	return c.serve(ctx, env, sourceHealth.Check, informers, withNotifier(notifier, main))
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

// queueWait is SQS's longest long poll.
const queueWait = 20 * time.Second

// lifecycleStep adapts the lifecycle Completer to the processor's view.
type lifecycleStep struct{ c *lifecycle.Completer }

func (l lifecycleStep) KeepAlive(ctx context.Context, a messages.LifecycleAction) error {
	return l.mapErr(l.c.KeepAlive(ctx, a))
}

func (l lifecycleStep) Complete(ctx context.Context, a messages.LifecycleAction, result string) error {
	return l.mapErr(l.c.Complete(ctx, a, lifecycle.Result(result)))
}

func (lifecycleStep) mapErr(err error) error {
	if errors.Is(err, lifecycle.ErrNoActiveAction) {
		return fmt.Errorf("%w: %w", processor.ErrNoActiveAction, err)
	}
	return err
}
