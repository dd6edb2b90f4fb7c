package health

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// Options configure the health of sources.
type Options struct {
	// StaleAfter is how long a source may fail before the process is not
	// ready.
	StaleAfter time.Duration
}

// AddFlags declares the health flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.StaleAfter, "source-stale-after", o.StaleAfter, "/readyz fails when a source (or the queue) has not been read successfully for this long.")
}

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	if o.StaleAfter <= 0 {
		return fmt.Errorf("--source-stale-after: must be positive; got %s", o.StaleAfter)
	}
	return nil
}
