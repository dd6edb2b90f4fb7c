// Package kubectlplugin is kubectl lastcall, lastcall plan as a kubectl
// plugin: kubectl's client flags (k8s.io/cli-runtime), the node as an
// argument, -o table|wide|json|yaml, and beside each pod what kubectl
// drain would do with it (k8s.io/kubectl's own drain filters). It is a
// binary of its own, so the daemon carries neither library.
package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/lastcall/lastcall/pkg/plan/render"
	"github.com/lastcall/lastcall/pkg/plancmd"
	"github.com/lastcall/lastcall/pkg/version"
)

const usage = `Usage: kubectl lastcall plan NODE [--deadline 2m] [-o table|wide|json|yaml] [flags]

Prints the drain lastcall would follow right now if node NODE had to be
empty --deadline from now: the groups its pods are evicted in, the grace
each gets, the PodDisruptionBudgets that block them, and what else stands
in the way of a clean drain. -o wide adds, pod by pod, what
"kubectl drain --ignore-daemonsets --delete-emptydir-data" would do. It
changes nothing. The cluster is found as kubectl finds it: --kubeconfig,
else $KUBECONFIG, else ~/.kube/config; --context and kubectl's other
client flags apply.

` + plancmd.ExitStatusUsage + `
Flags:
`

// Env is what the plugin takes from outside; Main leaves it zero.
type Env struct {
	// Client reads the cluster; nil: one from kubectl's flags.
	Client kubernetes.Interface
	// Now is when the plan is made; zero: time.Now().
	Now time.Time
}

// Main runs kubectl lastcall with args (those after "kubectl lastcall")
// and returns its exit status (plancmd.Exit*). Unlike lastcall plan, it
// reads no LASTCALL_* variable: it runs where kubectl does, not in
// lastcall's pod.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Command(ctx, args, Env{}, stdout, stderr)
}

// Command is Main with env.
func Command(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "plan" {
		fmt.Fprint(stderr, "Usage: kubectl lastcall plan NODE [--deadline 2m] [-o table|wide|json|yaml] [flags]\n"+
			"See kubectl lastcall plan --help.\n")
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
			return 0
		}
		return plancmd.ExitUsage
	}
	fs := pflag.NewFlagSet("kubectl lastcall plan", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, usage, fs.FlagUsages()) }
	o, complete := plancmd.Bind(fs)
	kube := genericclioptions.NewConfigFlags(true)
	kube.Namespace = nil // a plan is of a node, across namespaces
	kube.AddFlags(fs)
	err := fs.Parse(args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err == nil {
		switch {
		case fs.NArg() > 1:
			err = fmt.Errorf("one node at a time; got %s", strings.Join(fs.Args(), " "))
		case fs.NArg() == 1 && o.Node != "" && o.Node != fs.Arg(0):
			err = fmt.Errorf("--node %s and argument %s name two nodes", o.Node, fs.Arg(0))
		case fs.NArg() == 1:
			o.Node = fs.Arg(0)
		}
	}
	if err == nil {
		err = complete()
	}
	if err != nil {
		fmt.Fprintf(stderr, "kubectl lastcall plan: %v\nSee kubectl lastcall plan --help.\n", err)
		return plancmd.ExitUsage
	}
	if env.Client == nil {
		var cfg *rest.Config
		cfg, err = kube.ToRESTConfig()
		if err == nil {
			cfg.UserAgent = "kubectl-lastcall/" + version.Version
			env.Client, err = kubernetes.NewForConfig(cfg)
		}
		if err != nil {
			fmt.Fprintln(stderr, "kubectl lastcall plan:", err)
			return plancmd.ExitCluster
		}
	}
	if env.Now.IsZero() {
		env.Now = time.Now()
	}
	p, err := plancmd.Make(ctx, env.Client, o, env.Now)
	if err == nil {
		err = AddKubectlDrain(ctx, env.Client, &p)
	}
	if err == nil {
		if werr := render.Write(stdout, p, o.Output); werr != nil {
			err = fmt.Errorf("writing the plan: %w", werr)
		}
	}
	return plancmd.Exit(p, err, stderr)
}
