package app

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/flagenv"
)

// FuzzParseOptions runs Parse and Validate over any command line and
// environment: args and env are lists of lines, env's "NAME=value". They
// never panic, and every error names its flag: a pflag error quotes the
// flag as given, a Validate error starts with "--<flag>:", a stray word is
// an "unexpected argument". Parsing is deterministic, a flag's variable
// means what the flag means, and Validate accepts what it accepted once.
//
// --webhook-template-file is left out: Validate reads the file it names,
// and a fuzzer could name /dev/zero. pkg/notify's tests cover templates.
func FuzzParseOptions(f *testing.F) {
	agent, queue := "--node-name=n", strings.Join(q(), "\n")
	f.Add(agent, "")
	f.Add(queue, "")
	f.Add("", "LASTCALL_NODE_NAME=n\nLASTCALL_MODE=agent")
	f.Add("stray", "")
	f.Add("--node-name=n\n--\n--mode=queue", "")
	f.Add("-x\n--no-such-flag", "")
	f.Add("--mode", "")
	f.Add(agent, "LASTCALL_KUBE_API_QPS=NaN\nLASTCALL_IMDS_SIGNALS=\"")
	fs := pflag.NewFlagSet("seeds", pflag.ContinueOnError)
	NewOptions(Providers()...).AddFlags(fs)
	// Every flag, on the command line and in its variable, in the mode
	// that reads it, with a value most flags refuse. More seeds make every
	// run of the fuzzer slower to start: each is run with coverage, of all
	// of client-go too.
	fs.VisitAll(func(fl *pflag.Flag) {
		if strings.Contains(fl.Name, "template-file") {
			return
		}
		base := agent
		if strings.HasPrefix(fl.Usage, "Queue:") {
			base = queue
		}
		f.Add(base+"\n--"+fl.Name+"=x", "")
		f.Add(base, flagenv.EnvName(fl.Name)+"=-1")
	})
	f.Fuzz(func(t *testing.T, args, env string) {
		argv, vars := lines(args), map[string]string{}
		for _, l := range lines(env) {
			k, v, _ := strings.Cut(l, "=")
			vars[k] = v
		}
		for _, a := range argv {
			if strings.Contains(a, "template-file") {
				return
			}
		}
		for k := range vars {
			if strings.Contains(k, "TEMPLATE_FILE") {
				return
			}
		}
		lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }

		o, set, err := parseOptions(t, argv, lookup)
		checkNamesFlag(t, argv, err)
		_, set2, err2 := parseOptions(t, argv, lookup)
		if errString(err) != errString(err2) || (err == nil && !same(set, set2)) {
			t.Fatalf("not deterministic: %v, then %v", err, err2)
		}

		// Each variable of a flag not on the command line means the same
		// as the flag put first on it.
		var fromEnv []string
		set.VisitAll(func(fl *pflag.Flag) {
			if v, ok := vars[flagenv.EnvName(fl.Name)]; ok && !fl.Changed {
				fromEnv = append(fromEnv, "--"+fl.Name+"="+v)
			}
		})
		if len(fromEnv) > 0 {
			_, set3, err3 := parseOptions(t, append(fromEnv, argv...), func(string) (string, bool) { return "", false })
			if (err == nil) != (err3 == nil) || (err == nil && !same(set, set3)) {
				t.Fatalf("the environment %q and the flags %q differ:\n%v\n%v", vars, fromEnv, err, err3)
			}
		}

		if err == nil {
			before := values(set)
			if err := o.Validate(); err != nil || values(set) != before {
				t.Fatalf("Validate accepted %s, then said %v (and left %s)", before, err, values(set))
			}
		}
	})
}

// lines splits s into lines; "" is none.
func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// parseOptions is what main does: Parse, then Validate. set is the flag
// set, to tell which flags the command line gave.
func parseOptions(t *testing.T, args []string, lookup func(string) (string, bool)) (*Options, *pflag.FlagSet, error) {
	t.Helper()
	o := NewOptions(Providers()...)
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	o.AddFlags(fs)
	if err := flagenv.Parse(fs, args, lookup); err != nil {
		return o, fs, err
	}
	return o, fs, o.Validate()
}

// checkNamesFlag checks that err, from parseOptions, names the flag at
// fault.
func checkNamesFlag(t *testing.T, args []string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return
	}
	var each []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		each = joined.Unwrap() // Validate: one error per flag
	} else {
		each = []error{err}
	}
	fs := pflag.NewFlagSet("names", pflag.ContinueOnError)
	NewOptions(Providers()...).AddFlags(fs)
	namesKnownFlag := func(msg string) bool {
		found := false
		fs.VisitAll(func(f *pflag.Flag) { found = found || strings.Contains(msg, "--"+f.Name) })
		return found
	}
	for _, e := range each {
		msg := e.Error()
		switch {
		case strings.HasPrefix(msg, "--"):
			name, _, _ := strings.Cut(msg[2:], ":")
			if fs.Lookup(name) == nil {
				t.Fatalf("error %q names no flag", msg)
			}
		case strings.HasPrefix(msg, "unexpected argument "),
			strings.HasPrefix(msg, "unknown flag: --"),
			strings.HasPrefix(msg, "bad flag syntax: ") && quotesArg(msg, args),
			strings.HasPrefix(msg, "unknown shorthand flag: ") && quotesArg(msg, args),
			namesKnownFlag(msg): // a value pflag or the variable's flag refuses
		default:
			t.Fatalf("error %q for %q names no flag", msg, args)
		}
	}
}

// quotesArg says whether msg quotes one of the arguments that look like
// flags.
func quotesArg(msg string, args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "-") && strings.Contains(msg, a) {
			return true
		}
	}
	return false
}

// same compares two parses by the values of their flags, each the option
// it sets (every option has a flag): printed, since NaN, which
// --kube-api-qps accepts, equals nothing, itself included.
func same(a, b *pflag.FlagSet) bool { return values(a) == values(b) }

// values prints every flag's value.
func values(fs *pflag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) { fmt.Fprintf(&b, "--%s=%s\n", f.Name, f.Value) })
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
