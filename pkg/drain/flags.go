package drain

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// AddFlags declares the drain's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Concurrency, "eviction-concurrency", o.Concurrency, "Evictions in flight at once, per drain.")
	fs.DurationVar(&o.DeadlineMargin, "deadline-margin", o.DeadlineMargin, "Every pod should be gone this long before the deadline; longer grace periods are shortened to fit.")
	fs.Var((*policyValue)(&o.Policy), "pdb-deadline-policy", "When a PodDisruptionBudget still blocks a pod as the deadline nears: graceful-override (honour it until the last moment the pod can still shut down gracefully, then delete the pod with the grace it has left) or respect (never override; the cloud kills the pod at the deadline).")
	fs.DurationVar(&o.LBDelay, "lb-deregistration-delay", o.LBDelay, "Wait this long after taking the node out of load balancers before the first eviction, and before the drain ends (and a lifecycle action is completed) even with nothing to evict, so they stop sending it connections; set it to the load balancers' deregistration delay. Shortened so pods keep their grace period before the deadline.")
	fs.DurationVar(&o.GateDelay, "serving-gate-delay", o.GateDelay, "For pods with the lastcall.io/serving readiness gate: after the pod stopped serving and its endpoint left its Service's EndpointSlices, wait this long for kube-proxy and load balancers to follow before evicting it (bounded by the time the pod needs to shut down before the deadline).")
	fs.BoolVar(&o.KeepServicesServing, "keep-services-serving", o.KeepServicesServing, "Never drain a Service to zero ready endpoints while the deadline leaves room: when every ready endpoint of a Service is on the node, evict its pods one at a time, each once a replacement is ready on another node.")
	fs.BoolVar(&o.EvictDaemonSets, "evict-daemonsets", o.EvictDaemonSets, "Evict DaemonSet pods too, after every other pod is gone (log shippers then flush what the others wrote).")
}

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	var errs []error
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--eviction-concurrency: must be at least 1; got %d", o.Concurrency))
	}
	if o.LBDelay < 0 || o.LBDelay > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--lb-deregistration-delay: must be between 0 and 10m; got %s", o.LBDelay))
	}
	if o.GateDelay < 0 || o.GateDelay > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--serving-gate-delay: must be between 0 and 5m; got %s", o.GateDelay))
	}
	if o.DeadlineMargin < 0 {
		errs = append(errs, fmt.Errorf("--deadline-margin: must not be negative; got %s", o.DeadlineMargin))
	}
	return errors.Join(errs...)
}

// policyValue is a pflag.Value accepting only the known policies.
type policyValue Policy

func (v *policyValue) String() string { return string(*v) }

func (v *policyValue) Type() string { return "policy" }

func (v *policyValue) Set(s string) error {
	for _, p := range Policies {
		if string(p) == s {
			*v = policyValue(p)
			return nil
		}
	}
	return fmt.Errorf("must be graceful-override or respect; got %q", s)
}
