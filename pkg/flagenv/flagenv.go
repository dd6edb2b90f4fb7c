// Package flagenv parses lastcall's flags, each backed by an environment
// variable derived from its name: --poll-interval is LASTCALL_POLL_INTERVAL.
package flagenv

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "LASTCALL_"

// EnvName is the environment variable that backs a flag: --poll-interval is
// LASTCALL_POLL_INTERVAL.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Parse parses args into fs; each flag not given takes its value from its
// environment variable, if set. Errors name the flag (and the variable).
func Parse(fs *pflag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	fs.VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(f.Usage, "$"+EnvName(f.Name)) {
			f.Usage += fmt.Sprintf(" [$%s]", EnvName(f.Name))
		}
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		name := EnvName(f.Name)
		if v, ok := lookup(name); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("invalid value %q for flag --%s (from $%s): %v", v, f.Name, name, serr)
			}
		}
	})
	return err
}
