package lease

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// Options configure the per-node Leases of the queue processor.
type Options struct {
	// Namespace of the Leases; the processor's own namespace when empty.
	Namespace string
	// Duration is how long a Lease outlives a replica that stopped
	// renewing it.
	Duration time.Duration
}

// DefaultOptions are the defaults of the command line.
func DefaultOptions() Options { return Options{Duration: 15 * time.Second} }

// AddFlags declares the Leases' flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Namespace, "lease-namespace", o.Namespace, "Queue: namespace of the per-node Leases; --pod-namespace when empty.")
	fs.DurationVar(&o.Duration, "lease-duration", o.Duration, "Queue: how long a per-node Lease outlives a replica that stopped renewing it.")
}

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	if o.Duration < 3*time.Second {
		return fmt.Errorf("--lease-duration: must be at least 3s; got %s", o.Duration)
	}
	return nil
}
