package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/providers/aws/awsconfig"
	"github.com/lastcall/lastcall/providers/aws/instances"
	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/queue"
)

// queueOptions configure the queue processor.
type queueOptions struct {
	URL               string
	Region            string
	Endpoint          string
	Workers           int
	Visibility        time.Duration
	MaxReceives       int
	HeartbeatInterval time.Duration
	ManagedTag        string
	CompleteUnknown   bool
	FailureResult     string
	RetryAfter        time.Duration
	LifecycleDeadline time.Duration
	// OutOfServiceTaint marks the node of a terminated instance out of
	// service.
	OutOfServiceTaint bool
	// BurstWait bounds how long a drain waits for the other nodes of a
	// burst of messages to be held; 0 does not wait.
	BurstWait     time.Duration
	RebalanceHold time.Duration
	MaxInFlight   time.Duration
}

func defaultQueueOptions() queueOptions {
	return queueOptions{
		Workers:           100,
		Visibility:        60 * time.Second,
		MaxReceives:       10,
		HeartbeatInterval: 30 * time.Second,
		FailureResult:     string(lifecycle.Continue),
		RetryAfter:        10 * time.Second,
		LifecycleDeadline: 30 * time.Minute,
		BurstWait:         10 * time.Second,
		RebalanceHold:     30 * time.Minute,
		MaxInFlight:       11 * time.Hour,
	}
}

// queueWait is SQS's longest long poll.
const queueWait = 20 * time.Second

// AddQueueFlags implements provider.Queue.
func (p *Provider) AddQueueFlags(fs *pflag.FlagSet) {
	q := &p.queue
	fs.StringVar(&q.URL, "queue-url", q.URL, "Queue: URL of the SQS queue. Required in queue mode.")
	fs.StringVar(&q.Region, "region", q.Region, "Queue: AWS region; from the environment or the instance when empty (the agent's too, with --asg-complete-lifecycle).")
	fs.StringVar(&q.Endpoint, "aws-endpoint", q.Endpoint, "Queue: endpoint override for SQS, EC2 and Auto Scaling (tests, VPC endpoints; the agent's too, with --asg-complete-lifecycle).")
	fs.IntVar(&q.Workers, "workers", q.Workers, "Queue: messages worked on at once. A drain mostly waits (for pods to stop, for PDBs), so this should cover the nodes a mass reclaim takes at once.")
	fs.DurationVar(&q.Visibility, "visibility-timeout", q.Visibility, "Queue: how long a received message stays invisible; extended every third of it while its work runs.")
	fs.IntVar(&q.MaxReceives, "max-receives", q.MaxReceives, "Queue: after this many receives, a failing message is left to the queue's redrive policy.")
	fs.DurationVar(&q.HeartbeatInterval, "heartbeat-interval", q.HeartbeatInterval, "Queue: interval of RecordLifecycleActionHeartbeat while a drain runs (the agent's too, with --asg-complete-lifecycle).")
	fs.StringVar(&q.ManagedTag, "managed-tag", q.ManagedTag, "Queue: this cluster's instances are those carrying this tag (key, or key=value). "+
		"Messages about others are deleted and their lifecycle actions left alone; a tagged instance no node runs has its terminate action completed. "+
		"Clusters cannot share a queue: give each its own.")
	fs.BoolVar(&q.CompleteUnknown, "complete-unknown-instances", q.CompleteUnknown, "Queue: treat every instance the queue's messages name as this cluster's, "+
		"so the terminate lifecycle action of one no node runs (it never joined) is completed with CONTINUE at once; off, it is left to time out. "+
		"Only for a queue fed by this cluster's groups alone; not with --managed-tag.")
	fs.StringVar(&q.FailureResult, "lifecycle-failure-result", q.FailureResult, "Queue: lifecycle action result when a drain fails: CONTINUE or ABANDON (the agent's too, with --asg-complete-lifecycle).")
	fs.DurationVar(&q.RetryAfter, "retry-after", q.RetryAfter, "Queue: how soon a message that could not be worked on now reappears.")
	fs.DurationVar(&q.LifecycleDeadline, "lifecycle-deadline", q.LifecycleDeadline, "Queue: how long the drain of a terminate lifecycle hook (scale-in, instance refresh), which has no cloud deadline, "+
		"honours PodDisruptionBudgets, counted from when the action began; never longer than heartbeats can keep the action alive (the hook's global timeout). "+
		"--pdb-deadline-policy applies at its end. The agent's too, with --asg-complete-lifecycle.")
	fs.DurationVar(&q.MaxInFlight, "max-in-flight", q.MaxInFlight, "Queue: the longest a message stays in flight (SQS allows 12h from its receipt). "+
		"A drain still running then (a scheduled change days away) is carried on from its node alone, and its message deleted as handed-over; "+
		"any replica takes it up if this one stops.")
	fs.DurationVar(&q.BurstWait, "burst-wait", q.BurstWait, "Queue: before evicting from a node, wait until every node named by the messages received so far is held (cordoned, tainted) "+
		"and none came for 500 ms, so that pods evicted from one doomed node are not scheduled onto another; at most this long. 0 evicts at once. "+
		"Messages beyond --workers are not received meanwhile: keep --workers above the largest reclaim.")
	fs.BoolVar(&q.OutOfServiceTaint, "out-of-service-taint", q.OutOfServiceTaint, "Queue: when an instance state change says an instance is terminated and its node is still there, "+
		"taint the node node.kubernetes.io/out-of-service=nodeshutdown:NoExecute, so that Kubernetes deletes its pods and force-detaches its volumes at once "+
		"rather than after about 6 minutes.")
	fs.DurationVar(&q.RebalanceHold, "rebalance-hold", q.RebalanceHold, "Queue: how long a rebalance recommendation holds its node (cordoned, tainted) "+
		"when no interruption follows; then the queue's hold is released. An interruption meanwhile holds the node for itself.")
}

// ValidateQueue implements provider.Queue.
func (p *Provider) ValidateQueue() error {
	q := p.queue
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if q.URL == "" {
		bad("queue-url", "required in queue mode")
	}
	if q.Workers < 1 {
		bad("workers", "must be at least 1; got %d", q.Workers)
	}
	if q.Visibility < 3*time.Second || q.Visibility > 12*time.Hour {
		bad("visibility-timeout", "must be between 3s and 12h; got %s", q.Visibility)
	}
	if q.MaxInFlight <= q.Visibility || q.MaxInFlight > queue.MaxInFlight {
		bad("max-in-flight", "must be longer than --visibility-timeout (%s) and at most %s; got %s", q.Visibility, queue.MaxInFlight, q.MaxInFlight)
	}
	if q.MaxReceives < 1 {
		bad("max-receives", "must be at least 1; got %d", q.MaxReceives)
	}
	q.validateLifecycle(bad)
	if q.RetryAfter < 0 || q.RetryAfter > 12*time.Hour {
		bad("retry-after", "must be between 0 and 12h; got %s", q.RetryAfter)
	}
	if q.BurstWait < 0 || q.BurstWait > time.Minute {
		bad("burst-wait", "must be between 0 and 1m; got %s", q.BurstWait)
	}
	if q.RebalanceHold < time.Second || q.RebalanceHold > 7*24*time.Hour {
		bad("rebalance-hold", "must be between 1s and 168h; got %s", q.RebalanceHold)
	}
	if k, _, _ := strings.Cut(q.ManagedTag, "="); q.ManagedTag != "" && k == "" {
		bad("managed-tag", "needs a key: key or key=value; got %q", q.ManagedTag)
	}
	if q.CompleteUnknown && q.ManagedTag != "" {
		bad("complete-unknown-instances", "not with --managed-tag, which already tells which instances are this cluster's")
	}
	return errors.Join(errs...)
}

// validateLifecycle checks the flags of lifecycle actions, which the queue
// processor and the agent (--asg-complete-lifecycle) share.
func (q queueOptions) validateLifecycle(bad func(flag, format string, args ...any)) {
	if err := provider.CheckURL(q.Endpoint); err != nil {
		bad("aws-endpoint", "%v", err)
	}
	if q.HeartbeatInterval < time.Second {
		bad("heartbeat-interval", "must be at least 1s; got %s", q.HeartbeatInterval)
	}
	if r := lifecycle.Result(q.FailureResult); !r.Valid() {
		bad("lifecycle-failure-result", "must be CONTINUE or ABANDON; got %q", q.FailureResult)
	}
	if q.LifecycleDeadline < time.Minute || q.LifecycleDeadline > 48*time.Hour {
		bad("lifecycle-deadline", "must be between 1m and 48h (the longest a lifecycle action can be kept alive); got %s", q.LifecycleDeadline)
	}
}

// burstQuiet is how long no message may come before a burst is over.
const burstQuiet = 500 * time.Millisecond

// NewQueue implements provider.Queue: SQS in, each message's instances
// mapped to nodes and handed to their episodes, lifecycle actions
// completed.
func (p *Provider) NewQueue(ctx context.Context, env provider.QueueEnv) (provider.Runner, error) {
	q := p.queue
	aws := awsconfig.Options{Region: q.Region, Endpoint: q.Endpoint}
	cfg, err := awsconfig.Load(ctx, aws)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	mapper, err := instances.NewMapper(env.Nodes, aws.EC2(cfg), instances.Ownership{Tag: q.ManagedTag, All: q.CompleteUnknown})
	if err != nil {
		return nil, err
	}
	asg := aws.AutoScaling(cfg)
	completer := lifecycle.NewCompleter(asg, env.Registry, env.Log.With("component", "lifecycle"), env.Clock, q.HeartbeatInterval)
	popts := queue.ProcessorOptions{
		FailureResult: lifecycle.Result(q.FailureResult), RetryAfter: q.RetryAfter, LaunchRetryAfter: q.RetryAfter,
		LifecycleDeadline: q.LifecycleDeadline, DryRun: env.DryRun,
	}
	if q.OutOfServiceTaint {
		popts.OutOfService = env.Holds.MarkOutOfService
	}
	proc := queue.NewProcessor(popts, mapper, env.Episodes, env.Leases, completer, lifecycle.NewHooks(asg), env.Holds, env.Registry, env.Log.With("component", "processor"), env.Clock)
	env.Register(queue.SourceName)
	var burst *queue.Burst
	if q.BurstWait > 0 {
		burst = queue.NewBurst(env.Clock, burstQuiet, q.BurstWait)
		env.Episodes.GateDrains(burst.Wait)
	}
	consumer := queue.NewConsumer(aws.SQS(cfg), proc, queue.Options{
		Burst:    burst,
		QueueURL: q.URL, Workers: q.Workers, WaitTime: queueWait, Visibility: q.Visibility,
		MaxReceives: q.MaxReceives, MaxInFlight: q.MaxInFlight, Health: env.Health,
	}, env.Registry, env.Log.With("component", "consumer"), env.Clock)
	env.Log.Info("queue processor ready", "queue", q.URL, "workers", q.Workers, "managed_tag", q.ManagedTag,
		"complete_unknown_instances", q.CompleteUnknown, "rebalance_hold", q.RebalanceHold)
	nodes := func() []*corev1.Node {
		var out []*corev1.Node
		for _, o := range env.Nodes.GetStore().List() {
			if n, ok := o.(*corev1.Node); ok {
				out = append(out, n)
			}
		}
		return out
	}
	return runners{consumer.Run,
		func(ctx context.Context) error { return proc.ExpireRebalanceHolds(ctx, q.RebalanceHold, nodes) },
		// A carried notice no replica works on is taken up within
		// --retry-after, or a Lease duration when that is longer.
		func(ctx context.Context) error { return proc.CarryOn(ctx, max(q.RetryAfter, time.Second), nodes) },
	}, nil
}

// runners run side by side until ctx ends or one of them returns, which
// stops the others; Run returns their errors once all have returned.
type runners []func(ctx context.Context) error

func (rs runners) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			defer cancel()
			errs[i] = r(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
