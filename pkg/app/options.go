package app

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/cloud"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/providers/aws/imds"
	"github.com/lastcall/lastcall/providers/aws/processor"
	"github.com/lastcall/lastcall/providers/azure"
	"github.com/lastcall/lastcall/providers/gce"
)

// The modes lastcall runs in.
const (
	// ModeAgent watches this node's instance metadata (a DaemonSet).
	ModeAgent = "agent"
	// ModeQueue consumes an SQS queue for the whole cluster (a Deployment).
	ModeQueue = "queue"
)

// Options configure lastcall.
type Options struct {
	Mode          string
	PodName       string
	PodNamespace  string
	Kubeconfig    string
	KubeQPS       float32
	KubeBurst     int
	ListenAddress string
	LogFormat     string
	LogLevel      string
	DryRun        bool
	// ReleaseStartupPages gives the binary's pages back to the kernel
	// once start-up is over (see package residency).
	ReleaseStartupPages bool
	// FallbackDeadline is the deadline of a drain whose notice names none.
	FallbackDeadline time.Duration
	// SourceStaleAfter is how long a source may fail before /healthz fails.
	SourceStaleAfter time.Duration
	Drain            drain.Options
	// Notify configures webhook notifications (none without a URL).
	Notify notify.Options

	Agent AgentOptions
	Queue QueueOptions
}

// AgentOptions configure the node agent.
type AgentOptions struct {
	NodeName string
	// Cloud is auto, aws, gce or azure.
	Cloud           string
	IMDS            imds.Options
	rebalanceAction string
	GCE             gce.Options
	Azure           azure.Options
}

// QueueOptions configure the queue processor.
type QueueOptions struct {
	URL               string
	Region            string
	Endpoint          string
	Workers           int
	Visibility        time.Duration
	MaxReceives       int
	HeartbeatInterval time.Duration
	ManagedTag        string
	FailureResult     string
	LeaseNamespace    string
	LeaseDuration     time.Duration
	RetryAfter        time.Duration
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		Mode:                ModeAgent,
		KubeQPS:             -1,
		KubeBurst:           100,
		ListenAddress:       ":9477",
		LogFormat:           "json",
		LogLevel:            "info",
		FallbackDeadline:    2 * time.Minute,
		SourceStaleAfter:    time.Minute,
		ReleaseStartupPages: true,
		Drain:               drain.DefaultOptions(),
		Notify:              notify.Options{Timeout: notify.DefaultTimeout},
		Agent: AgentOptions{
			Cloud:           "auto",
			GCE:             gce.Options{SpotDeadline: 30 * time.Second, MaintenanceDeadline: 60 * time.Second},
			Azure:           azure.Options{Interval: time.Second},
			rebalanceAction: string(interruption.ActionCordon),
			IMDS: imds.Options{
				Interval:               imds.DefaultInterval,
				ASGTerminationDeadline: 2 * time.Minute,
				Signals:                imds.AllSignals(),
			},
		},
		Queue: QueueOptions{
			Workers:           100,
			Visibility:        60 * time.Second,
			MaxReceives:       10,
			HeartbeatInterval: 30 * time.Second,
			FailureResult:     processor.Continue,
			LeaseDuration:     15 * time.Second,
			RetryAfter:        10 * time.Second,
		},
	}
}

// AddFlags declares every option on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Mode, "mode", o.Mode, "agent: watch this node's instance metadata (DaemonSet); queue: consume an SQS queue for the whole cluster (Deployment).")
	fs.StringVar(&o.PodName, "pod-name", o.PodName, "Name of lastcall's own pod: never evicted, and the queue processor's lease holder identity.")
	fs.StringVar(&o.PodNamespace, "pod-namespace", o.PodNamespace, "Namespace of lastcall's own pod.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig; in-cluster configuration when empty.")
	fs.Float32Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "Client-side rate limit on Kubernetes API requests per second; -1 leaves protection to the server's API Priority and Fairness.")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "Client-side burst of Kubernetes API requests, when --kube-api-qps is positive.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address serving /metrics, /healthz and /readyz.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: json or text.")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Log level: debug, info, warn or error.")
	fs.BoolVar(&o.DryRun, "dry-run", o.DryRun, "Log what would be done to nodes and pods, and change nothing.")
	fs.BoolVar(&o.ReleaseStartupPages, "release-startup-pages", o.ReleaseStartupPages, "Once started (caches synced, every source read once), unmap the pages of lastcall's binary that start-up touched; "+
		"they stay in the page cache and fault back in when needed. About halves the idle resident set.")
	fs.DurationVar(&o.FallbackDeadline, "fallback-deadline", o.FallbackDeadline, "Drain deadline for notices that carry none (rebalance recommendations set to drain, lifecycle hooks, state changes).")
	fs.DurationVar(&o.SourceStaleAfter, "source-stale-after", o.SourceStaleAfter, "/healthz fails when a source (or the queue) has not been read successfully for this long.")
	fs.IntVar(&o.Drain.Concurrency, "eviction-concurrency", o.Drain.Concurrency, "Evictions in flight at once, per drain.")
	fs.DurationVar(&o.Drain.DeadlineMargin, "deadline-margin", o.Drain.DeadlineMargin, "Every pod should be gone this long before the deadline; longer grace periods are shortened to fit.")
	fs.Var(newPolicyValue(&o.Drain.Policy), "pdb-deadline-policy", "When a PodDisruptionBudget still blocks a pod as the deadline nears: graceful-override (honour it until the last moment the pod can still shut down gracefully, then delete the pod with the grace it has left) or respect (never override; the cloud kills the pod at the deadline).")
	fs.DurationVar(&o.Drain.LBDelay, "lb-deregistration-delay", o.Drain.LBDelay, "Wait this long after taking the node out of load balancers before the first eviction, so they stop sending it connections; shortened so pods keep their grace period before the deadline.")
	fs.BoolVar(&o.Drain.EvictDaemonSets, "evict-daemonsets", o.Drain.EvictDaemonSets, "Evict DaemonSet pods too, after every other pod is gone (log shippers then flush what the others wrote).")
	o.Notify.AddFlags(fs)

	a := &o.Agent
	fs.StringVar(&a.NodeName, "node-name", a.NodeName, "Agent: name of the node this agent runs on (from the downward API: spec.nodeName). Required in agent mode.")
	fs.StringVar(&a.Cloud, "cloud", a.Cloud, "Agent: auto (ask each metadata service), aws, gce or azure.")
	fs.DurationVar(&a.GCE.SpotDeadline, "gce-preemption-deadline", a.GCE.SpotDeadline, "Agent, GCE: time from a preemption notice to the VM stopping (30 s for spot and preemptible VMs).")
	fs.DurationVar(&a.GCE.MaintenanceDeadline, "gce-maintenance-deadline", a.GCE.MaintenanceDeadline, "Agent, GCE: time from a TERMINATE_ON_HOST_MAINTENANCE notice to the VM stopping.")
	fs.StringVar(&a.Azure.Endpoint, "azure-endpoint", a.Azure.Endpoint, "Agent, Azure: instance metadata endpoint; http://169.254.169.254 when empty.")
	fs.BoolVar(&a.Azure.Acknowledge, "azure-acknowledge", a.Azure.Acknowledge, "Agent, Azure: after a drain, approve the scheduled event (StartRequests) so the platform proceeds early.")
	fs.BoolVar(&a.Azure.DrainFreeze, "azure-drain-freeze", a.Azure.DrainFreeze, "Agent, Azure: drain on Freeze events too (by default they are only reported).")
	fs.StringVar(&a.IMDS.Endpoint, "imds-endpoint", a.IMDS.Endpoint, "Agent: EC2 instance metadata endpoint; the SDK default (http://169.254.169.254) when empty.")
	fs.BoolVar(&a.IMDS.AllowIMDSv1, "imds-allow-v1", a.IMDS.AllowIMDSv1, "Agent: fall back to IMDSv1 (no session token) when IMDSv2 tokens cannot be had.")
	fs.DurationVar(&a.IMDS.Interval, "poll-interval", a.IMDS.Interval, "Agent: how often each polled metadata signal is read (AWS, Azure; GCE is long-polled).")
	fs.StringSliceVar(&a.IMDS.Signals, "imds-signals", a.IMDS.Signals, "Agent: instance metadata signals to watch: spot, rebalance, scheduled-maintenance, asg-lifecycle.")
	fs.StringVar(&a.rebalanceAction, "rebalance-action", a.rebalanceAction, "Agent: what a rebalance recommendation does: cordon, or drain.")
	fs.DurationVar(&a.IMDS.ASGTerminationDeadline, "asg-termination-deadline", a.IMDS.ASGTerminationDeadline, "Agent: drain deadline after the Auto Scaling target lifecycle state turns Terminated.")

	q := &o.Queue
	fs.StringVar(&q.URL, "queue-url", q.URL, "Queue: URL of the SQS queue. Required in queue mode.")
	fs.StringVar(&q.Region, "region", q.Region, "Queue: AWS region; from the environment or the instance when empty.")
	fs.StringVar(&q.Endpoint, "aws-endpoint", q.Endpoint, "Queue: endpoint override for SQS, EC2 and Auto Scaling (tests, VPC endpoints).")
	fs.IntVar(&q.Workers, "workers", q.Workers, "Queue: messages worked on at once. A drain mostly waits (for pods to stop, for PDBs), so this should cover the nodes a mass reclaim takes at once.")
	fs.DurationVar(&q.Visibility, "visibility-timeout", q.Visibility, "Queue: how long a received message stays invisible; extended every third of it while its work runs.")
	fs.IntVar(&q.MaxReceives, "max-receives", q.MaxReceives, "Queue: after this many receives, a failing message is left to the queue's redrive policy.")
	fs.DurationVar(&q.HeartbeatInterval, "heartbeat-interval", q.HeartbeatInterval, "Queue: interval of RecordLifecycleActionHeartbeat while a drain runs.")
	fs.StringVar(&q.ManagedTag, "managed-tag", q.ManagedTag, "Queue: only process instances carrying this tag (key, or key=value), so clusters can share a queue.")
	fs.StringVar(&q.FailureResult, "lifecycle-failure-result", q.FailureResult, "Queue: lifecycle action result when a drain fails: CONTINUE or ABANDON.")
	fs.StringVar(&q.LeaseNamespace, "lease-namespace", q.LeaseNamespace, "Queue: namespace of the per-node Leases; --pod-namespace when empty.")
	fs.DurationVar(&q.LeaseDuration, "lease-duration", q.LeaseDuration, "Queue: how long a per-node Lease outlives a replica that stopped renewing it.")
	fs.DurationVar(&q.RetryAfter, "retry-after", q.RetryAfter, "Queue: how soon a message that could not be worked on now reappears.")
}

// Validate checks the options and fills derived fields. Each error names
// its flag.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if q := float64(o.KubeQPS); q == 0 || (q < 0 && q != -1) || math.IsNaN(q) || math.IsInf(q, 0) {
		bad("kube-api-qps", "must be positive, or -1 for no client-side limit; got %v", o.KubeQPS)
	}
	if o.KubeBurst < 1 {
		bad("kube-api-burst", "must be at least 1; got %d", o.KubeBurst)
	}
	if !slices.Contains([]string{"json", "text"}, o.LogFormat) {
		bad("log-format", "must be json or text; got %q", o.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(o.LogLevel)) {
		bad("log-level", "must be debug, info, warn or error; got %q", o.LogLevel)
	}
	if o.FallbackDeadline <= 0 {
		bad("fallback-deadline", "must be positive; got %s", o.FallbackDeadline)
	}
	if o.SourceStaleAfter <= 0 {
		bad("source-stale-after", "must be positive; got %s", o.SourceStaleAfter)
	}
	if o.Drain.Concurrency < 1 {
		bad("eviction-concurrency", "must be at least 1; got %d", o.Drain.Concurrency)
	}
	if o.Drain.LBDelay < 0 || o.Drain.LBDelay > 10*time.Minute {
		bad("lb-deregistration-delay", "must be between 0 and 10m; got %s", o.Drain.LBDelay)
	}
	if o.Drain.DeadlineMargin < 0 {
		bad("deadline-margin", "must not be negative; got %s", o.Drain.DeadlineMargin)
	}
	if (o.PodName == "") != (o.PodNamespace == "") {
		bad("pod-name", "--pod-name and --pod-namespace go together")
	}
	if err := o.Notify.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch o.Mode {
	case ModeAgent:
		o.Agent.validate(bad)
	case ModeQueue:
		o.Queue.validate(bad)
		if o.Queue.LeaseNamespace == "" {
			o.Queue.LeaseNamespace = o.PodNamespace
		}
		if o.Queue.LeaseNamespace == "" {
			bad("lease-namespace", "required in queue mode (or set --pod-namespace)")
		}
	default:
		bad("mode", "must be agent or queue; got %q", o.Mode)
	}
	o.Drain.Self = types.NamespacedName{Namespace: o.PodNamespace, Name: o.PodName}
	o.Drain.DryRun = o.DryRun
	return errors.Join(errs...)
}

func (a *AgentOptions) validate(bad func(flag, format string, args ...any)) {
	if !slices.Contains(append([]string{"auto"}, cloud.All...), a.Cloud) {
		bad("cloud", "must be auto, aws, gce or azure; got %q", a.Cloud)
	}
	if a.GCE.SpotDeadline <= 0 {
		bad("gce-preemption-deadline", "must be positive; got %s", a.GCE.SpotDeadline)
	}
	if a.GCE.MaintenanceDeadline <= 0 {
		bad("gce-maintenance-deadline", "must be positive; got %s", a.GCE.MaintenanceDeadline)
	}
	a.Azure.Interval = a.IMDS.Interval
	if a.NodeName == "" {
		bad("node-name", "required in agent mode (set it from the downward API: spec.nodeName, or $%s)", EnvName("node-name"))
	}
	if a.IMDS.Interval <= 0 || a.IMDS.Interval > time.Minute {
		bad("poll-interval", "must be between 1ns and 1m; got %s", a.IMDS.Interval)
	}
	if a.IMDS.ASGTerminationDeadline <= 0 {
		bad("asg-termination-deadline", "must be positive; got %s", a.IMDS.ASGTerminationDeadline)
	}
	switch interruption.Action(a.rebalanceAction) {
	case interruption.ActionCordon, interruption.ActionDrain:
		a.IMDS.RebalanceAction = interruption.Action(a.rebalanceAction)
	default:
		bad("rebalance-action", "must be cordon or drain; got %q", a.rebalanceAction)
	}
	for _, s := range a.IMDS.Signals {
		if !slices.Contains(imds.AllSignals(), s) {
			bad("imds-signals", "unknown signal %q; known: %s", s, strings.Join(imds.AllSignals(), ", "))
		}
	}
	if len(a.IMDS.Signals) == 0 {
		bad("imds-signals", "at least one signal is needed")
	}
}

func (q *QueueOptions) validate(bad func(flag, format string, args ...any)) {
	if q.URL == "" {
		bad("queue-url", "required in queue mode")
	}
	if q.Workers < 1 {
		bad("workers", "must be at least 1; got %d", q.Workers)
	}
	if q.Visibility < 3*time.Second || q.Visibility > 12*time.Hour {
		bad("visibility-timeout", "must be between 3s and 12h; got %s", q.Visibility)
	}
	if q.MaxReceives < 1 {
		bad("max-receives", "must be at least 1; got %d", q.MaxReceives)
	}
	if q.HeartbeatInterval < time.Second {
		bad("heartbeat-interval", "must be at least 1s; got %s", q.HeartbeatInterval)
	}
	if q.FailureResult != processor.Continue && q.FailureResult != processor.Abandon {
		bad("lifecycle-failure-result", "must be CONTINUE or ABANDON; got %q", q.FailureResult)
	}
	if q.LeaseDuration < 3*time.Second {
		bad("lease-duration", "must be at least 3s; got %s", q.LeaseDuration)
	}
	if q.RetryAfter < 0 || q.RetryAfter > 12*time.Hour {
		bad("retry-after", "must be between 0 and 12h; got %s", q.RetryAfter)
	}
	if k, _, _ := strings.Cut(q.ManagedTag, "="); q.ManagedTag != "" && k == "" {
		bad("managed-tag", "needs a key: key or key=value; got %q", q.ManagedTag)
	}
}

// policyValue is a pflag.Value accepting only the known policies.
type policyValue struct{ p *drain.Policy }

func newPolicyValue(p *drain.Policy) *policyValue { return &policyValue{p} }

func (v *policyValue) String() string { return string(*v.p) }

func (v *policyValue) Type() string { return "policy" }

func (v *policyValue) Set(s string) error {
	for _, p := range drain.Policies {
		if string(p) == s {
			*v.p = p
			return nil
		}
	}
	return fmt.Errorf("must be graceful-override or respect; got %q", s)
}
