package app

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/providers/aws/imds"
)

// Options configure the node agent.
type Options struct {
	NodeName      string
	PodName       string
	PodNamespace  string
	Kubeconfig    string
	KubeQPS       float32
	KubeBurst     int
	ListenAddress string
	LogFormat     string
	LogLevel      string
	DryRun        bool

	// FallbackDeadline is the deadline of a drain whose notice names none.
	FallbackDeadline time.Duration
	// SourceStaleAfter is how long a source may fail before /healthz fails.
	SourceStaleAfter time.Duration

	rebalanceAction string
	IMDS            imds.Options
	Drain           drain.Options
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{
		KubeQPS:          -1,
		KubeBurst:        100,
		ListenAddress:    ":9477",
		LogFormat:        "json",
		LogLevel:         "info",
		FallbackDeadline: 2 * time.Minute,
		SourceStaleAfter: time.Minute,
		rebalanceAction:  string(interruption.ActionCordon),
		IMDS: imds.Options{
			Interval:               imds.DefaultInterval,
			ASGTerminationDeadline: 2 * time.Minute,
			Signals:                []string{"spot", "rebalance", "scheduled-maintenance", "asg-lifecycle"},
		},
		Drain: drain.DefaultOptions(),
	}
}

// AddFlags declares every option on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of the node this agent runs on (from the downward API: spec.nodeName). Required.")
	fs.StringVar(&o.PodName, "pod-name", o.PodName, "Name of lastcall's own pod, never evicted.")
	fs.StringVar(&o.PodNamespace, "pod-namespace", o.PodNamespace, "Namespace of lastcall's own pod.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig; in-cluster configuration when empty.")
	fs.Float32Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "Client-side rate limit on Kubernetes API requests per second; -1 leaves protection to the server's API Priority and Fairness.")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "Client-side burst of Kubernetes API requests, when --kube-api-qps is positive.")
	fs.StringVar(&o.ListenAddress, "listen-address", o.ListenAddress, "Address serving /metrics, /healthz and /readyz.")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "Log format: json or text.")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "Log level: debug, info, warn or error.")
	fs.BoolVar(&o.DryRun, "dry-run", o.DryRun, "Log what would be done to the node and its pods, and change nothing.")
	fs.DurationVar(&o.FallbackDeadline, "fallback-deadline", o.FallbackDeadline, "Drain deadline for notices that carry none (rebalance recommendations set to drain).")
	fs.DurationVar(&o.SourceStaleAfter, "source-stale-after", o.SourceStaleAfter, "/healthz fails when a source has not read its signal successfully for this long.")

	fs.StringVar(&o.IMDS.Endpoint, "imds-endpoint", o.IMDS.Endpoint, "EC2 instance metadata endpoint; the SDK default (http://169.254.169.254) when empty.")
	fs.BoolVar(&o.IMDS.AllowIMDSv1, "imds-allow-v1", o.IMDS.AllowIMDSv1, "Fall back to IMDSv1 (no session token) when IMDSv2 tokens cannot be had.")
	fs.DurationVar(&o.IMDS.Interval, "poll-interval", o.IMDS.Interval, "How often each instance metadata signal is read.")
	fs.StringSliceVar(&o.IMDS.Signals, "imds-signals", o.IMDS.Signals, "Instance metadata signals to watch: spot, rebalance, scheduled-maintenance, asg-lifecycle.")
	fs.StringVar(&o.rebalanceAction, "rebalance-action", o.rebalanceAction, "What a rebalance recommendation does: cordon, or drain.")
	fs.DurationVar(&o.IMDS.ASGTerminationDeadline, "asg-termination-deadline", o.IMDS.ASGTerminationDeadline, "Drain deadline after the Auto Scaling target lifecycle state turns Terminated.")

	fs.IntVar(&o.Drain.Concurrency, "eviction-concurrency", o.Drain.Concurrency, "Evictions in flight at once.")
	fs.DurationVar(&o.Drain.DeadlineMargin, "deadline-margin", o.Drain.DeadlineMargin, "Every pod should be gone this long before the deadline; longer grace periods are shortened to fit.")
}

// Validate checks the options and fills derived fields. Each error names
// its flag.
func (o *Options) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if o.NodeName == "" {
		bad("node-name", "required (set it from the downward API: spec.nodeName, or $%s)", EnvName("node-name"))
	}
	if o.KubeQPS == 0 || (o.KubeQPS < 0 && o.KubeQPS != -1) {
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
	if o.IMDS.Interval <= 0 || o.IMDS.Interval > time.Minute {
		bad("poll-interval", "must be between 1ns and 1m; got %s", o.IMDS.Interval)
	}
	if o.FallbackDeadline <= 0 {
		bad("fallback-deadline", "must be positive; got %s", o.FallbackDeadline)
	}
	if o.IMDS.ASGTerminationDeadline <= 0 {
		bad("asg-termination-deadline", "must be positive; got %s", o.IMDS.ASGTerminationDeadline)
	}
	if o.SourceStaleAfter <= 0 {
		bad("source-stale-after", "must be positive; got %s", o.SourceStaleAfter)
	}
	switch interruption.Action(o.rebalanceAction) {
	case interruption.ActionCordon, interruption.ActionDrain:
		o.IMDS.RebalanceAction = interruption.Action(o.rebalanceAction)
	default:
		bad("rebalance-action", "must be cordon or drain; got %q", o.rebalanceAction)
	}
	known := []string{"spot", "rebalance", "scheduled-maintenance", "asg-lifecycle"}
	for _, s := range o.IMDS.Signals {
		if !slices.Contains(known, s) {
			bad("imds-signals", "unknown signal %q; known: %s", s, strings.Join(known, ", "))
		}
	}
	if len(o.IMDS.Signals) == 0 {
		bad("imds-signals", "at least one signal is needed")
	}
	if o.Drain.Concurrency < 1 {
		bad("eviction-concurrency", "must be at least 1; got %d", o.Drain.Concurrency)
	}
	if o.Drain.DeadlineMargin < 0 {
		bad("deadline-margin", "must not be negative; got %s", o.Drain.DeadlineMargin)
	}
	if (o.PodName == "") != (o.PodNamespace == "") {
		bad("pod-name", "--pod-name and --pod-namespace go together")
	}
	o.Drain.Self = types.NamespacedName{Namespace: o.PodNamespace, Name: o.PodName}
	o.Drain.DryRun = o.DryRun
	return errors.Join(errs...)
}
