// Package provider is what a cloud gives lastcall: how an agent tells that
// its node runs there, the interruption sources of the instance's
// metadata, and how much notice the cloud gives before it takes a node.
// Each cloud implements Provider in a folder of its own under providers/;
// the wiring (package app) registers it with one line, and nothing else
// outside providers/ knows a cloud.
package provider

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
)

// Provider is one cloud, as the node agent sees it.
type Provider interface {
	// Name is the cloud's short, stable name: --cloud takes it.
	Name() string
	// AddFlags declares the provider's flags. Their help starts with the
	// cloud, e.g. "Agent, GCE: ...".
	AddFlags(fs *pflag.FlagSet)
	// Validate checks the provider's flags; each error names its flag.
	Validate() error
	// Detect asks the instance's metadata service the question only this
	// cloud answers; nil means the node runs there. ctx bounds it.
	Detect(ctx context.Context) error
	// NoticeWindow is the shortest notice the cloud gives before it takes
	// a node: a drain planned ahead (the drainability gauge) works to it.
	NoticeWindow() time.Duration
	// Sources returns the interruption sources of the instance's
	// metadata, read through the provider's own HTTP client (with no
	// proxy: see MetadataHTTPClient).
	Sources(ctx context.Context, env Env) ([]interruption.Source, error)
}

// Diagnoser is a Provider that can tell why its metadata service does not
// answer as it should, with the likely fix: the agent asks it when no cloud
// answers, and once at start when --cloud names it.
type Diagnoser interface {
	// Diagnose returns a short cause (a metric label) and a sentence that
	// names the likely cause and the fix; "" when it finds nothing wrong,
	// or cannot tell. ctx bounds it.
	Diagnose(ctx context.Context) (cause, advice string)
}

// Env is what the sources of a Provider are given.
type Env struct {
	// Node is the name of the agent's node.
	Node string
	// ProviderID is the node's spec.providerID when the sources are
	// built ("" when it has none, or the node is not known yet).
	ProviderID string
	// PollInterval is how often a polled signal is read.
	PollInterval time.Duration
	// Health receives the outcome of every read.
	Health interruption.HealthReporter
	// Registry takes the sources' own metrics, if they have any.
	Registry prometheus.Registerer
	Log      *slog.Logger
	Clock    clock.WithTicker
}

// Queue is a Provider whose cloud delivers its interruptions to a queue
// (AWS: EventBridge and Auto Scaling lifecycle hooks on SQS), which a
// queue processor consumes for the whole cluster.
type Queue interface {
	Provider
	// AddQueueFlags declares the queue processor's flags.
	AddQueueFlags(fs *pflag.FlagSet)
	// ValidateQueue checks them; each error names its flag.
	ValidateQueue() error
	// NewQueue builds the queue front end. It is called before the
	// informers start (it may index them).
	NewQueue(ctx context.Context, env QueueEnv) (Runner, error)
}

// QueueEnv is what a queue front end is given.
type QueueEnv struct {
	// Episodes takes the notices of every node.
	Episodes *episode.Manager
	// Nodes is an informer of every node of the cluster.
	Nodes cache.SharedIndexInformer
	// Leases give this replica the right to work on a node.
	Leases *lease.Locker
	// Holds is the node client the episodes hold nodes with: a front end
	// records on a hold what it takes to carry its notice on from the node
	// alone.
	Holds *node.Client
	// Health receives the outcome of every receive from the queue.
	Health interruption.HealthReporter
	// Register declares a source to Health before it first reports.
	Register func(source string)
	Registry prometheus.Registerer
	Log      *slog.Logger
	Clock    clock.WithTicker
	// DryRun: change nothing outside the process (no lifecycle action
	// completed or kept alive), and log what would be done.
	DryRun bool
}

// Runner runs until ctx ends.
type Runner interface {
	Run(ctx context.Context) error
}
