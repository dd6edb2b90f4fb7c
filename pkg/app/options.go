package app

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/notify"
	"github.com/lastcall/lastcall/pkg/provider"
)

// The modes lastcall runs in.
const (
	// ModeAgent watches this node's instance metadata (a DaemonSet).
	ModeAgent = "agent"
	// ModeQueue consumes a cloud's queue of interruptions for the whole
	// cluster (a Deployment); it keeps every node's drainability too.
	ModeQueue = "queue"
	// ModeDrainability only keeps every node's drainability (a
	// Deployment of one replica, beside the agents).
	ModeDrainability = "drainability"
)

// The values of --metrics-auth.
const (
	// MetricsAuthNone serves /metrics over plain HTTP to anyone who
	// reaches the port.
	MetricsAuthNone = "none"
	// MetricsAuthKubernetes serves every path over HTTPS, and /metrics
	// only to a bearer token the API server authenticates (TokenReview)
	// whose user may get the non-resource URL /metrics
	// (SubjectAccessReview).
	MetricsAuthKubernetes = "kubernetes"
)

// Modes lists the modes.
var Modes = []string{ModeAgent, ModeQueue, ModeDrainability}

// defaultPollInterval is how often polled metadata signals are read.
const defaultPollInterval = 250 * time.Millisecond

// Options configure lastcall: the process's own, then each component's,
// each declaring its own flags.
type Options struct {
	Mode          string
	PodName       string
	PodNamespace  string
	Kubeconfig    string
	KubeQPS       float32
	KubeBurst     int
	KubeTimeout   time.Duration
	ListenAddress string
	MetricsAuth   string
	LogFormat     string
	LogLevel      string
	DryRun        bool

	Agent   AgentOptions
	Health  health.Options
	Episode episode.Options
	Drain   drain.Options
	Notify  notify.Options
	Lease   lease.Options
	// Providers are the clouds lastcall knows (see Providers).
	Providers []provider.Provider
}

// AgentOptions configure the node agent.
type AgentOptions struct {
	NodeName string
	// Cloud is auto or a provider's name.
	Cloud        string
	PollInterval time.Duration
	// RebalanceHoldTimeout releases a rebalance recommendation's hold
	// this long after it was issued; 0 keeps it.
	RebalanceHoldTimeout time.Duration
}

// NewOptions returns the defaults, for the given clouds.
func NewOptions(providers ...provider.Provider) *Options {
	return &Options{
		Mode:          ModeAgent,
		KubeQPS:       -1,
		KubeBurst:     100,
		KubeTimeout:   5 * time.Second,
		ListenAddress: ":9477",
		MetricsAuth:   MetricsAuthNone,
		LogFormat:     "json",
		LogLevel:      "info",
		Agent:         AgentOptions{Cloud: "auto", PollInterval: defaultPollInterval},
		Health:        health.Options{StaleAfter: time.Minute},
		Episode:       episode.Options{FallbackDeadline: 2 * time.Minute, TaintEffect: corev1.TaintEffectNoSchedule},
		Drain:         drain.DefaultOptions(),
		Notify:        notify.Options{Timeout: notify.DefaultTimeout},
		Lease:         lease.DefaultOptions(),
		Providers:     providers,
	}
}

// AddFlags declares every option on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Mode, "mode", o.Mode, "agent: watch this node's instance metadata (DaemonSet); queue: consume the cloud's queue of interruptions for the whole cluster (Deployment); "+
		"drainability: only keep every node's drainability gauge (Deployment of one, beside the agents).")
	fs.StringVar(&o.PodName, "pod-name", o.PodName, "Name of lastcall's own pod: never evicted, and the queue processor's lease holder identity.")
	fs.StringVar(&o.PodNamespace, "pod-namespace", o.PodNamespace, "Namespace of lastcall's own pod.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig; in-cluster configuration when empty.")
	fs.Float32Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "Client-side rate limit on Kubernetes API requests per second; -1 leaves protection to the server's API Priority and Fairness.")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "Client-side burst of Kubernetes API requests, when --kube-api-qps is positive.")
	fs.DurationVar(&o.KubeTimeout, "kube-api-timeout", o.KubeTimeout, "Bound on each Kubernetes API call but watches and lists. When one goes unanswered that long, every connection to the API server is closed and the call tried again on a new one: "+
		"a connection that stopped passing bytes without closing would otherwise hold every call for about 45 s.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address serving /metrics, /healthz and /readyz.")
	fs.StringVar(&o.MetricsAuth, "metrics-auth", o.MetricsAuth, "none: serve /metrics over HTTP to anyone; kubernetes: serve over HTTPS (a self-signed certificate), and /metrics only to a bearer token the API server authenticates "+
		"whose user may get the non-resource URL /metrics (TokenReview, then SubjectAccessReview, as kube-rbac-proxy does; needs the ClusterRole system:auth-delegator). The probes stay open.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: json or text.")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Log level: debug, info, warn or error.")
	fs.BoolVar(&o.DryRun, "dry-run", o.DryRun, "Log what would be done to nodes and pods, and change nothing: no node change, no eviction, no Event, no lifecycle heartbeat or completion. "+
		"In queue mode each message is deleted once logged: not safe on a queue another consumer reads (give a trial run its own queue).")

	a := &o.Agent
	fs.StringVar(&a.NodeName, "node-name", a.NodeName, "Agent: name of the node this agent runs on (from the downward API: spec.nodeName). Required in agent mode.")
	fs.StringVar(&a.Cloud, "cloud", a.Cloud, "Agent: auto (ask each metadata service), or one of: "+strings.Join(o.providerNames(), ", ")+
		". In drainability mode, the cloud whose notice drains are planned against.")
	fs.DurationVar(&a.PollInterval, "poll-interval", a.PollInterval, "Agent: how often each polled metadata signal is read (long-polled ones are not polled).")
	fs.DurationVar(&a.RebalanceHoldTimeout, "rebalance-hold-timeout", a.RebalanceHoldTimeout, "Agent: release the hold of a rebalance recommendation this long after EC2 issued it, when no interruption followed "+
		"(a recommendation stays listed once issued); 0 keeps the node held until it goes.")

	o.Health.AddFlags(fs)
	o.Episode.AddFlags(fs)
	o.Drain.AddFlags(fs)
	o.Notify.AddFlags(fs)
	o.Lease.AddFlags(fs)
	for _, p := range o.Providers {
		p.AddFlags(fs)
		if q, ok := p.(provider.Queue); ok {
			q.AddQueueFlags(fs)
		}
	}
}

// Validate checks the options, without changing them. Each error names its
// flag.
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
	if o.KubeTimeout <= 0 || o.KubeTimeout > time.Minute {
		bad("kube-api-timeout", "must be positive and at most 1m; got %s", o.KubeTimeout)
	}
	if !slices.Contains([]string{MetricsAuthNone, MetricsAuthKubernetes}, o.MetricsAuth) {
		bad("metrics-auth", "must be %s or %s; got %q", MetricsAuthNone, MetricsAuthKubernetes, o.MetricsAuth)
	}
	if !slices.Contains([]string{"json", "text"}, o.LogFormat) {
		bad("log-format", "must be json or text; got %q", o.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(o.LogLevel)) {
		bad("log-level", "must be debug, info, warn or error; got %q", o.LogLevel)
	}
	if (o.PodName == "") != (o.PodNamespace == "") {
		bad("pod-name", "--pod-name and --pod-namespace go together")
	}
	if o.Agent.Cloud != "auto" && o.provider(o.Agent.Cloud) == nil {
		bad("cloud", "must be auto or one of %s; got %q", strings.Join(o.providerNames(), ", "), o.Agent.Cloud)
	}
	errs = append(errs, o.Health.Validate(), o.Episode.Validate(), o.Drain.Validate(), o.Notify.Validate())
	switch o.Mode {
	case ModeAgent:
		if o.Agent.NodeName == "" {
			bad("node-name", "required in agent mode (set it from the downward API: spec.nodeName, or $%s)", flagenv.EnvName("node-name"))
		}
		if o.Agent.PollInterval <= 0 || o.Agent.PollInterval > time.Minute {
			bad("poll-interval", "must be between 1ns and 1m; got %s", o.Agent.PollInterval)
		}
		if h := o.Agent.RebalanceHoldTimeout; h != 0 && (h < time.Second || h > 7*24*time.Hour) {
			bad("rebalance-hold-timeout", "must be 0 (never) or between 1s and 168h; got %s", h)
		}
		for _, p := range o.Providers {
			errs = append(errs, p.Validate())
		}
	case ModeQueue:
		q := o.queueProvider()
		if q == nil {
			bad("mode", "no cloud lastcall knows has a queue")
		} else {
			errs = append(errs, q.ValidateQueue())
		}
		errs = append(errs, o.Lease.Validate())
		if o.leaseNamespace() == "" {
			bad("lease-namespace", "required in queue mode (or set --pod-namespace)")
		}
	case ModeDrainability:
	default:
		bad("mode", "must be %s; got %q", strings.Join(Modes, ", "), o.Mode)
	}
	if window, what := o.shortestWindow(); window > 0 && o.Drain.DeadlineMargin >= window {
		bad("deadline-margin", "must be shorter than the shortest notice lastcall may drain within (%s: %s), or every drain would end as it starts; got %s",
			window, what, o.Drain.DeadlineMargin)
	}
	return errors.Join(errs...)
}

// shortestWindow is the shortest notice a drain of this mode may have, and
// where it comes from: the fallback deadline, or a cloud's notice (every
// cloud the agent may detect; the queue's).
func (o *Options) shortestWindow() (time.Duration, string) {
	window, what := o.Episode.FallbackDeadline, "--fallback-deadline"
	consider := func(p provider.Provider) {
		if w := p.NoticeWindow(); w > 0 && (window <= 0 || w < window) {
			window, what = w, p.Name()
		}
	}
	switch p := o.provider(o.Agent.Cloud); {
	case o.Mode == ModeQueue:
		if q := o.queueProvider(); q != nil {
			consider(q)
		}
	case p != nil:
		consider(p)
	default:
		for _, p := range o.Providers {
			consider(p)
		}
	}
	return window, what
}

// drainOptions are the drain's options with what the process adds: its
// own pod, never evicted, and dry run.
func (o *Options) drainOptions() drain.Options {
	d := o.Drain
	d.Self = types.NamespacedName{Namespace: o.PodNamespace, Name: o.PodName}
	d.DryRun = o.DryRun
	return d
}

// episodeOptions are the episode's options with dry run.
func (o *Options) episodeOptions() episode.Options {
	e := o.Episode
	e.DryRun = o.DryRun
	return e
}

// leaseNamespace is --lease-namespace, else --pod-namespace.
func (o *Options) leaseNamespace() string {
	if o.Lease.Namespace != "" {
		return o.Lease.Namespace
	}
	return o.PodNamespace
}

// provider returns the provider named name, or nil.
func (o *Options) provider(name string) provider.Provider {
	for _, p := range o.Providers {
		if p.Name() == name {
			return p
		}
	}
	return nil
}

// queueProvider returns the provider with a queue: --cloud's when it
// names one, else the first that has one.
func (o *Options) queueProvider() provider.Queue {
	if q, ok := o.provider(o.Agent.Cloud).(provider.Queue); ok {
		return q
	}
	for _, p := range o.Providers {
		if q, ok := p.(provider.Queue); ok {
			return q
		}
	}
	return nil
}

func (o *Options) providerNames() []string {
	names := make([]string, 0, len(o.Providers))
	for _, p := range o.Providers {
		names = append(names, p.Name())
	}
	return names
}
