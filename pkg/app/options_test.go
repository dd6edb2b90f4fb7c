package app

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/pkg/notify"
)

func parse(args []string, env map[string]string) (*Options, error) {
	o, _, err := parseFlags(args, env)
	return o, err
}

// parseFlags also returns the flag set, to read the flags of components
// whose options are their own.
func parseFlags(args []string, env map[string]string) (*Options, *pflag.FlagSet, error) {
	o := NewOptions(Providers()...)
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	o.AddFlags(fs)
	if err := flagenv.Parse(fs, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		return o, fs, err
	}
	return o, fs, o.Validate()
}

// flag is the value of a flag as parsed.
func flag(fs *pflag.FlagSet, name string) string { return fs.Lookup(name).Value.String() }

func TestFlagsAndEnvironment(t *testing.T) {
	o, fs, err := parseFlags([]string{"--poll-interval=100ms"}, map[string]string{
		"LASTCALL_NODE_NAME":        "n1",
		"LASTCALL_POLL_INTERVAL":    "5s", // the flag wins
		"LASTCALL_REBALANCE_ACTION": "drain",
		"LASTCALL_IMDS_SIGNALS":     "spot,rebalance",
		"LASTCALL_DRY_RUN":          "true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Agent.NodeName != "n1" || o.Agent.PollInterval != 100*time.Millisecond || flag(fs, "rebalance-action") != "drain" ||
		flag(fs, "imds-signals") != "[spot,rebalance]" || !o.DryRun || !o.drainOptions().DryRun || !o.episodeOptions().DryRun {
		t.Fatalf("parsed %+v", o)
	}
}

func TestWebhookFlags(t *testing.T) {
	tmpl := filepath.Join(t.TempDir(), "hook.tmpl")
	if err := os.WriteFile(tmpl, []byte(`{"content": "${node}"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want notify.Options
	}{
		{"defaults: no webhook", []string{"--node-name=n"}, nil, notify.Options{Format: notify.FormatSlack, Timeout: 5 * time.Second}},
		{"URL from the environment (a Secret)", q("--cluster-name=prod", "--webhook-timeout=2s"),
			map[string]string{"LASTCALL_WEBHOOK_URL": "https://hooks.example/services/T0/B0/x", "LASTCALL_WEBHOOK_TEMPLATE_FILE": tmpl},
			notify.Options{URL: "https://hooks.example/services/T0/B0/x", Format: notify.FormatSlack, TemplateFile: tmpl, Timeout: 2 * time.Second, Cluster: "prod"}},
		{"plain http", []string{"--node-name=n", "--webhook-url=http://receiver.monitoring:8080/hook"}, nil,
			notify.Options{URL: "http://receiver.monitoring:8080/hook", Format: notify.FormatSlack, Timeout: 5 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parse(tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o.Notify, tc.want) {
				t.Fatalf("parsed %+v, want %+v", o.Notify, tc.want)
			}
		})
	}
}

// q is a valid queue-mode command line plus extra flags.
func q(extra ...string) []string {
	return append([]string{"--mode=queue", "--queue-url=https://sqs.example/1/q", "--pod-name=p", "--pod-namespace=ns"}, extra...)
}

func TestQueueModeNeedsNoNodeName(t *testing.T) {
	o, fs, err := parseFlags(q("--managed-tag=kubernetes.io/cluster/prod=owned"), map[string]string{"LASTCALL_LIFECYCLE_FAILURE_RESULT": "ABANDON"})
	if err != nil {
		t.Fatal(err)
	}
	if o.leaseNamespace() != "ns" || flag(fs, "lifecycle-failure-result") != "ABANDON" || flag(fs, "workers") != "100" {
		t.Fatalf("parsed %+v", o)
	}
}

func TestBadValuesNameTheirFlag(t *testing.T) {
	badTemplate := filepath.Join(t.TempDir(), "bad.tmpl")
	if err := os.WriteFile(badTemplate, []byte(`{"text": {{.Node}`), 0o600); err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(t.TempDir(), "text.tmpl")
	if err := os.WriteFile(notJSON, []byte(`node {{.Node}} is going`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "--node-name: required"},
		{[]string{"--node-name=n", "--poll-interval=abc"}, nil, `"--poll-interval"`},
		{[]string{"--node-name=n"}, map[string]string{"LASTCALL_POLL_INTERVAL": "soon"}, "--poll-interval (from $LASTCALL_POLL_INTERVAL)"},
		{[]string{"--node-name=n", "--poll-interval=0s"}, nil, "--poll-interval: must be between"},
		{[]string{"--node-name=n", "--rebalance-action=maybe"}, nil, "--rebalance-action: must be cordon or drain"},
		{[]string{"--node-name=n", "--imds-signals=spot,tea"}, nil, `--imds-signals: unknown signal "tea"`},
		{[]string{"--node-name=n", "--log-format=xml"}, nil, "--log-format"},
		{[]string{"--node-name=n", "--log-level=loud"}, nil, "--log-level"},
		{[]string{"--node-name=n", "--kube-api-qps=0"}, nil, "--kube-api-qps"},
		{[]string{"--node-name=n", "--kube-api-qps=NaN"}, nil, "--kube-api-qps"},
		{[]string{"--node-name=n", "--kube-api-qps=+Inf"}, nil, "--kube-api-qps"},
		{[]string{"--node-name=n", "--kube-api-timeout=0s"}, nil, "--kube-api-timeout"},
		{[]string{"--node-name=n", "--eviction-concurrency=0"}, nil, "--eviction-concurrency"},
		{[]string{"--node-name=n", "--deadline-margin=-1s"}, nil, "--deadline-margin"},
		{[]string{"--node-name=n", "--deadline-margin=30s"}, nil, "--deadline-margin: must be shorter than the shortest notice lastcall may drain within (30s: gce)"},
		{[]string{"--node-name=n", "--deadline-margin=3m"}, nil, "--deadline-margin: must be shorter than the shortest notice"},
		{q("--deadline-margin=2m"), nil, "--deadline-margin: must be shorter than the shortest notice lastcall may drain within (2m0s"},
		{[]string{"--node-name=n", "--fallback-deadline=10s", "--deadline-margin=10s"}, nil, "(10s: --fallback-deadline)"},
		{[]string{"--node-name=n", "--fallback-deadline=0s"}, nil, "--fallback-deadline"},
		{[]string{"--node-name=n", "--pod-name=x"}, nil, "--pod-name and --pod-namespace go together"},
		{[]string{"--node-name=n", "stray"}, nil, `unexpected argument "stray"`},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"--mode=both"}, nil, `--mode: must be agent, queue, drainability; got "both"`},
		{[]string{"--node-name=n", "--cloud=oci"}, nil, `--cloud: must be auto or one of aws, gce, azure; got "oci"`},
		{[]string{"--node-name=n", "--gce-preemption-deadline=0s"}, nil, "--gce-preemption-deadline: must be positive"},
		{[]string{"--node-name=n", "--azure-endpoint=169.254.169.254"}, nil, "--azure-endpoint: must be an absolute http or https URL"},
		{[]string{"--mode=queue", "--lease-namespace=x"}, nil, "--queue-url: required in queue mode"},
		{[]string{"--mode=queue", "--queue-url=u"}, nil, "--lease-namespace: required in queue mode"},
		{q("--workers=0"), nil, "--workers: must be at least 1"},
		{q("--visibility-timeout=1s"), nil, "--visibility-timeout"},
		{q("--max-receives=0"), nil, "--max-receives"},
		{q("--visibility-timeout=12h"), nil, "--max-in-flight: must be longer than --visibility-timeout (12h0m0s) and at most 12h0m0s; got 11h0m0s"},
		{q("--heartbeat-interval=10ms"), nil, "--heartbeat-interval"},
		{q("--lifecycle-failure-result=RETRY"), nil, `--lifecycle-failure-result: must be CONTINUE or ABANDON; got "RETRY"`},
		{q("--lease-duration=1s"), nil, "--lease-duration"},
		{q("--managed-tag==v"), nil, "--managed-tag: needs a key"},
		{q(), map[string]string{"LASTCALL_WORKERS": "lots"}, "--workers (from $LASTCALL_WORKERS)"},
		{[]string{"--node-name=n", "--webhook-url=ftp://hooks.example/x"}, nil, `--webhook-url: must be an absolute http or https URL; got scheme "ftp"`},
		{[]string{"--node-name=n"}, map[string]string{"LASTCALL_WEBHOOK_URL": "hooks.example/services/x"}, `--webhook-url: must be an absolute http or https URL; got scheme ""`},
		{q("--webhook-url=https:///x"), nil, "--webhook-url: must be an absolute http or https URL; got no host"},
		{[]string{"--node-name=n", "--webhook-timeout=0s"}, nil, "--webhook-timeout: must be positive"},
		{q(), map[string]string{"LASTCALL_WEBHOOK_TIMEOUT": "-1s"}, "--webhook-timeout: must be positive"},
		{[]string{"--node-name=n", "--webhook-template-file=/no/such/hook.tmpl"}, nil, "--webhook-template-file: open /no/such/hook.tmpl: no such file"},
		{[]string{"--node-name=n", "--webhook-template-file=" + badTemplate}, nil, "--webhook-template-file: bad.tmpl: line 1, column 11: not valid JSON"},
		{q("--webhook-template-file=" + notJSON), nil, "--webhook-template-file: text.tmpl: line 1, column 2: not valid JSON"},
	} {
		_, err := parse(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want an error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// The real binary exits 2, naming the flag, on a bad value, and 0 on --help.
func TestBinaryExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "lastcall")
	build := exec.Command("go", "build", "-o", bin, "github.com/lastcall/lastcall/cmd/lastcall")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args   []string
		env    []string
		status int
		want   string
	}{
		{[]string{"--help"}, nil, 0, "--poll-interval duration"},
		{[]string{"--help"}, nil, 0, "set $LASTCALL_WEBHOOK_URL from a Secret"},
		{nil, []string{"LASTCALL_NODE_NAME=n", "LASTCALL_WEBHOOK_URL=ftp://hooks.example/x"}, 2, "--webhook-url: must be an absolute http or https URL"},
		{[]string{"--node-name=n", "--poll-interval=abc"}, nil, 2, "--poll-interval"},
		{nil, []string{"LASTCALL_NODE_NAME=n", "LASTCALL_EVICTION_CONCURRENCY=many"}, 2, "$LASTCALL_EVICTION_CONCURRENCY"},
		{nil, nil, 2, "--node-name: required"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		status := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != tc.status || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v %v: exit %d, output %q; want exit %d and %q", tc.args, tc.env, status, out, tc.status, tc.want)
		}
	}
}
