// Package plancmd is "lastcall plan": it prints the drain lastcall would
// follow right now for a node, against a deadline, and exits 1 when it
// would not finish in time.
package plancmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/pkg/plan"
	"github.com/lastcall/lastcall/pkg/plan/render"
	"github.com/lastcall/lastcall/pkg/version"
)

// The exit statuses of lastcall plan.
const (
	// ExitFits: the drain would finish before the deadline less the
	// margin, every pod shut down gracefully.
	ExitFits = 0
	// ExitNoFit: it would not; the plan's problems say why.
	ExitNoFit = 1
	// ExitUsage: bad flags, or no such node.
	ExitUsage = 2
	// ExitCluster: the cluster could not be read (no usable
	// configuration, an unreachable or refusing API server), or the plan
	// could not be written.
	ExitCluster = 3
)

const planUsage = `Usage: lastcall plan --node NAME [--deadline 2m] [-o table|json] [flags]

Prints the drain lastcall would follow right now if node NAME had to be
empty --deadline from now: the groups its pods are evicted in, the grace
each gets, the PodDisruptionBudgets that block them, and what else stands
in the way of a clean drain. It reads the node, its pods, and the
PodDisruptionBudgets and Services of their namespaces; it changes nothing.

` + ExitStatusUsage + `
Flags:
`

// ExitStatusUsage explains the exit statuses, for a usage text.
const ExitStatusUsage = `Exit status:
  0  the drain would finish before the deadline less the margin
  1  it would not (the plan says why)
  2  bad usage, or no such node
  3  the cluster could not be read
`

// The daemon's flags that change a plan are declared by the drain itself
// (drain.Options.AddFlags) and --pod-name and --pod-namespace, lastcall's
// own pod: they keep their defaults, their validation and their
// environment variables, so run in lastcall's own pod it plans as the
// daemon drains.

// Options configure lastcall plan.
type Options struct {
	Node string
	// Deadline is how long from now the node has.
	Deadline time.Duration
	// Output is render.FormatTable or render.FormatJSON.
	Output string
	// Kubeconfig is the path of a kubeconfig; $KUBECONFIG when empty,
	// then the in-cluster configuration.
	Kubeconfig string
	// Context is the kubeconfig context to use; its current one when
	// empty.
	Context string
	Drain   drain.Options
}

// Env is what lastcall plan takes from outside. Main leaves it
// zero; tests pass a client and pin the clock.
type Env struct {
	// Client reads the cluster; nil: one from the options.
	Client kubernetes.Interface
	// Now is when the plan is made; zero: time.Now().
	Now time.Time
}

// ErrNodeNotFound is returned by Run when the node does not exist.
var ErrNodeNotFound = errors.New("node not found")

// Main runs lastcall plan with args (those after "plan") and returns
// its exit status (PlanExit*).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	return Command(ctx, args, Env{}, stdout, stderr, lookupEnv)
}

// Command is Main with env.
func Command(ctx context.Context, args []string, env Env, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	o, err := Parse(args, stdout, lookupEnv)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "lastcall plan: %v\nSee lastcall plan --help.\n", err)
		return ExitUsage
	}
	if env.Client == nil {
		cfg, err := planRestConfig(o.Kubeconfig, o.Context, lookupEnv)
		if err == nil {
			env.Client, err = kubernetes.NewForConfig(cfg)
		}
		if err != nil {
			fmt.Fprintln(stderr, "lastcall plan:", err)
			return ExitCluster
		}
	}
	if env.Now.IsZero() {
		env.Now = time.Now()
	}
	p, err := Run(ctx, env.Client, o, env.Now, stdout)
	return Exit(p, err, stderr)
}

// Parse parses the arguments of lastcall plan; each flag not given
// takes its value from its environment variable, if set (see flagenv).
// --help writes the usage to stdout and returns pflag.ErrHelp. Errors name
// their flag.
func Parse(args []string, stdout io.Writer, lookupEnv func(string) (string, bool)) (*Options, error) {
	fs := pflag.NewFlagSet("lastcall plan", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stdout) // with ContinueOnError, only --help writes
	fs.Usage = func() { fmt.Fprint(stdout, planUsage, fs.FlagUsages()) }
	o, complete := Bind(fs)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig; when empty, $KUBECONFIG, and without it the in-cluster configuration.")
	fs.StringVar(&o.Context, "context", o.Context, "The kubeconfig context to use; its current one when empty.")
	if err := flagenv.Parse(fs, args, lookupEnv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: name the node with --node", fs.Arg(0))
	}
	return o, complete()
}

// Bind adds to fs the flags of lastcall plan but for those that find the
// cluster: --node, --deadline, --output, the daemon's drain flags that
// change a plan, and lastcall's own pod. It returns the options they set
// and complete, which validates them once fs is parsed (and o.Node set,
// if not by --node), errors naming their flag.
func Bind(fs *pflag.FlagSet) (o *Options, complete func() error) {
	o = &Options{Deadline: 2 * time.Minute, Output: render.FormatTable, Drain: drain.DefaultOptions()}
	var podName, podNamespace string
	fs.StringVar(&o.Node, "node", o.Node, "Name of the node whose drain to plan. Required.")
	fs.DurationVar(&o.Deadline, "deadline", o.Deadline, "How long from now the node has (the interruption notice's deadline).")
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format: "+strings.Join(render.Formats, ", ")+".")
	drainFlags := pflag.NewFlagSet("drain", pflag.ContinueOnError)
	o.Drain.AddFlags(drainFlags)
	for _, name := range []string{"deadline-margin", "pdb-deadline-policy", "lb-deregistration-delay", "evict-daemonsets"} {
		fs.AddFlag(drainFlags.Lookup(name))
	}
	fs.StringVar(&podName, "pod-name", "", "Name of lastcall's own pod: never evicted.")
	fs.StringVar(&podNamespace, "pod-namespace", "", "Namespace of lastcall's own pod.")
	return o, func() error {
		var errs []error
		if o.Node == "" {
			errs = append(errs, fmt.Errorf("--node: required: the node whose drain to plan"))
		}
		if o.Deadline <= 0 {
			errs = append(errs, fmt.Errorf("--deadline: must be positive; got %s", o.Deadline))
		}
		if !slices.Contains(render.Formats, o.Output) {
			errs = append(errs, fmt.Errorf("--output: must be %s; got %q", strings.Join(render.Formats, ", "), o.Output))
		}
		if (podName == "") != (podNamespace == "") {
			errs = append(errs, errors.New("--pod-name: --pod-name and --pod-namespace go together"))
		}
		errs = append(errs, o.Drain.Validate())
		o.Drain.Self = types.NamespacedName{Namespace: podNamespace, Name: podName}
		return errors.Join(errs...)
	}
}

// Run reads the node o.Node, its pods, and the PodDisruptionBudgets
// and Services of their namespaces; works out their drain at now against
// now+o.Deadline; and writes the plan to stdout in o.Output. It returns
// ErrNodeNotFound (wrapped) when the node does not exist.
func Run(ctx context.Context, client kubernetes.Interface, o *Options, now time.Time, stdout io.Writer) (plan.Plan, error) {
	p, err := Make(ctx, client, o, now)
	if err != nil {
		return p, err
	}
	if err := render.Write(stdout, p, o.Output); err != nil {
		return p, fmt.Errorf("writing the plan: %w", err)
	}
	return p, nil
}

// Make is Run without the writing.
func Make(ctx context.Context, client kubernetes.Interface, o *Options, now time.Time) (plan.Plan, error) {
	in, err := readPlanInputs(ctx, client, o.Node)
	if err != nil {
		return plan.Plan{}, err
	}
	in.Now, in.Deadline = now, now.Add(o.Deadline)
	return plan.Build(in, o.Drain), nil
}

// Exit is the exit status of a plan made (or not, with err), saying on
// stderr what went wrong.
func Exit(p plan.Plan, err error, stderr io.Writer) int {
	switch {
	case errors.Is(err, ErrNodeNotFound):
		fmt.Fprintln(stderr, "lastcall plan:", err)
		return ExitUsage
	case err != nil:
		fmt.Fprintln(stderr, "lastcall plan:", err)
		return ExitCluster
	case !p.Fits:
		return ExitNoFit
	default:
		return ExitFits
	}
}

// readPlanInputs reads what a plan of node is made from. The pods are
// those bound to the node; budgets and Services are listed in their
// namespaces only.
func readPlanInputs(ctx context.Context, client kubernetes.Interface, node string) (plan.Inputs, error) {
	in := plan.Inputs{Node: node}
	if _, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return in, fmt.Errorf("%w: %s", ErrNodeNotFound, node)
	} else if err != nil {
		return in, fmt.Errorf("reading node %s: %w", node, err)
	}
	pods, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return in, fmt.Errorf("listing the pods of node %s: %w", node, err)
	}
	var namespaces []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != node { // a server ignoring the field selector
			continue
		}
		in.Pods = append(in.Pods, p)
		namespaces = append(namespaces, p.Namespace)
	}
	slices.Sort(namespaces)
	for _, ns := range slices.Compact(namespaces) {
		budgets, err := client.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return in, fmt.Errorf("listing the PodDisruptionBudgets of namespace %s: %w", ns, err)
		}
		for i := range budgets.Items {
			in.Budgets = append(in.Budgets, &budgets.Items[i])
		}
		services, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return in, fmt.Errorf("listing the Services of namespace %s: %w", ns, err)
		}
		for i := range services.Items {
			in.Services = append(in.Services, &services.Items[i])
		}
	}
	services, err := client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("listing the Services of every namespace, for the load balancers: %w", err)
	}
	in.LoadBalancers = []*corev1.Service{}
	for i := range services.Items {
		if s := &services.Items[i]; s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			in.LoadBalancers = append(in.LoadBalancers, s)
		}
	}
	inNamespace := map[string][]*corev1.Pod{}
	in.ReadyElsewhere = plan.ReadyElsewhere(node, func(ns string) ([]*corev1.Pod, error) {
		if pods, ok := inNamespace[ns]; ok {
			return pods, nil
		}
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var pods []*corev1.Pod
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
		inNamespace[ns] = pods
		return pods, nil
	})
	return in, nil
}

// planRestConfig is the client configuration of lastcall plan: the file
// --kubeconfig names; else $KUBECONFIG (a list of files, merged as kubectl
// merges them); else the in-cluster configuration.
func planRestConfig(kubeconfig, context string, lookupEnv func(string) (string, bool)) (*rest.Config, error) {
	env, _ := lookupEnv("KUBECONFIG")
	var cfg *rest.Config
	var err error
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	load := func(rules *clientcmd.ClientConfigLoadingRules) {
		// Not the deferred loader: it would fall back to the in-cluster
		// configuration when the files are missing.
		var merged *clientcmdapi.Config
		if merged, err = rules.Load(); err == nil {
			cfg, err = clientcmd.NewDefaultClientConfig(*merged, overrides).ClientConfig()
		}
	}
	switch {
	case kubeconfig != "":
		load(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig})
	case env != "":
		load(&clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)})
	default:
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration (--kubeconfig %q, $KUBECONFIG %q): %w", kubeconfig, env, err)
	}
	cfg.UserAgent = "lastcall/" + version.Version
	return cfg, nil
}
