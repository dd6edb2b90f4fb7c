package episode

import (
	"fmt"

	"github.com/spf13/pflag"
)

// AddFlags declares the episode's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.FallbackDeadline, "fallback-deadline", o.FallbackDeadline, "Drain deadline for notices that carry none (rebalance recommendations set to drain, lifecycle hooks, state changes).")
}

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	if o.FallbackDeadline <= 0 {
		return fmt.Errorf("--fallback-deadline: must be positive; got %s", o.FallbackDeadline)
	}
	return nil
}
