package episode

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/spf13/pflag"
)

// AddFlags declares the episode's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.FallbackDeadline, "fallback-deadline", o.FallbackDeadline, "Drain deadline for notices that carry none (rebalance recommendations set to drain, lifecycle hooks, state changes).")
	fs.BoolVar(&o.CordonOnly, "cordon-only", o.CordonOnly, "Hold (taint, cordon, out of load balancers) the node for every notice and evict nothing: its pods go with the node. "+
		"A lifecycle action is completed (CONTINUE) once the node is held; an Azure event is not approved.")
	fs.Var(&taintEffect{&o.TaintEffect}, "taint-effect", "Effect of the taint a hold puts on the node: NoSchedule, PreferNoSchedule or NoExecute. "+
		"NoExecute has Kubernetes evict at once every pod that does not tolerate it, without PodDisruptionBudgets or lastcall's order.")
}

// taintEffect is a flag value naming a taint effect.
type taintEffect struct{ e *corev1.TaintEffect }

func (t *taintEffect) String() string {
	if t.e == nil {
		return ""
	}
	return string(*t.e)
}

func (t *taintEffect) Set(s string) error {
	for _, e := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute} {
		if strings.EqualFold(s, string(e)) {
			*t.e = e
			return nil
		}
	}
	return fmt.Errorf("must be NoSchedule, PreferNoSchedule or NoExecute")
}

func (t *taintEffect) Type() string { return "effect" }

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	if o.FallbackDeadline <= 0 {
		return fmt.Errorf("--fallback-deadline: must be positive; got %s", o.FallbackDeadline)
	}
	return nil
}
