package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// badValues are the invalid values of a flag that every flag of its type
// has: pflag cannot parse them.
var badValues = map[string]string{
	"duration":    "notaduration",
	"int":         "x",
	"float32":     "x",
	"bool":        "maybe",
	"stringSlice": `"`, // a bare quote: not CSV
	"policy":      "x",
	"effect":      "x",
}

// outOfRange are values of numeric flags that parse and that Validate
// refuses. Every duration, int and float flag has one here, or is listed in
// anyNumber: a new numeric flag must say which.
var outOfRange = map[string][]string{
	"kube-api-qps":             {"0", "-2", "NaN", "+Inf"},
	"kube-api-burst":           {"0"},
	"kube-api-timeout":         {"0s", "2m"},
	"eviction-concurrency":     {"0"},
	"workers":                  {"0"},
	"max-receives":             {"0"},
	"fallback-deadline":        {"0s"},
	"source-stale-after":       {"0s"},
	"deadline-margin":          {"-1s", "30s"},
	"lb-deregistration-delay":  {"-1s", "11m"},
	"serving-gate-delay":       {"-1s", "6m"},
	"webhook-timeout":          {"0s"},
	"gce-preemption-deadline":  {"0s"},
	"gce-maintenance-deadline": {"0s"},
	"poll-interval":            {"0s", "2m"},
	"asg-termination-deadline": {"0s"},
	"visibility-timeout":       {"1s", "13h"},
	"heartbeat-interval":       {"500ms"},
	"lease-duration":           {"1s"},
	"retry-after":              {"-1s", "13h"},
	"lifecycle-deadline":       {"30s", "49h"},
	"rebalance-hold":           {"0s", "169h"},
	"burst-wait":               {"-1s", "2m"},
	"rebalance-hold-timeout":   {"500ms", "169h"},
	"max-in-flight":            {"5s", "13h"},
}

// anyNumber are the numeric flags every parsable value of which is valid.
var anyNumber = []string{}

// invalidStrings are values of string flags that Validate refuses. Every
// string flag has one here, or is listed in freeStrings.
var invalidStrings = map[string][]string{
	"mode":                     {"x"},
	"cloud":                    {"x"},
	"rebalance-action":         {"x"},
	"imds-signals":             {"x", "spot,x"},
	"lifecycle-failure-result": {"x"},
	"webhook-url":              {"x", "ftp://hooks.example/x", "https:///x"},
	"webhook-template-file":    {"/no/such/hook.tmpl"},
	"webhook-format":           {"x"},
	"log-format":               {"x"},
	"metrics-auth":             {"x"},
	"log-level":                {"x"},
	"managed-tag":              {"=owned"},
	"node-name":                {""},
	"queue-url":                {""},
	"pod-name":                 {"p"}, // without --pod-namespace
	"pod-namespace":            {"ns"},
}

// freeStrings are the string flags Validate takes any value of. A bad
// address or path among them fails when it is used, with status 1.
var freeStrings = []string{
	"kubeconfig", "listen-address", "cluster-name", "azure-endpoint", "imds-endpoint",
	"region", "aws-endpoint", "lease-namespace",
}

// badFlag is one invalid setting of one flag, given on the command line or
// in the flag's environment variable.
type badFlag struct {
	flag, value string
	env         bool
}

func (b badFlag) String() string {
	if b.env {
		return fmt.Sprintf("$%s=%q", flagenv.EnvName(b.flag), b.value)
	}
	return fmt.Sprintf("--%s=%q", b.flag, b.value)
}

// badFlags lists an invalid value of every flag that can have one, from
// the flag set itself, each as a flag and as a variable.
func badFlags(t *testing.T) (cases []badFlag, queueFlags map[string]bool) {
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	app.NewOptions(app.Providers()...).AddFlags(fs)
	queueFlags = map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.HasPrefix(f.Usage, "Queue:") {
			queueFlags[f.Name] = true
		}
		var values []string
		if v, ok := badValues[f.Value.Type()]; ok {
			values = append(values, v)
		}
		switch f.Value.Type() {
		case "duration", "int", "float32":
			values = append(values, outOfRange[f.Name]...)
			if outOfRange[f.Name] == nil && !slices.Contains(anyNumber, f.Name) {
				t.Errorf("--%s: no out-of-range value in outOfRange, nor in anyNumber", f.Name)
			}
		case "string", "stringSlice":
			values = append(values, invalidStrings[f.Name]...)
			if invalidStrings[f.Name] == nil && !slices.Contains(freeStrings, f.Name) {
				t.Errorf("--%s: no invalid value in invalidStrings, nor in freeStrings", f.Name)
			}
		}
		if len(values) == 0 && !slices.Contains(freeStrings, f.Name) {
			t.Errorf("--%s (%s): no invalid value; add its type to badValues", f.Name, f.Value.Type())
		}
		for _, v := range values {
			cases = append(cases, badFlag{flag: f.Name, value: v}, badFlag{flag: f.Name, value: v, env: true})
		}
	})
	return cases, queueFlags
}

// TestBadInputFlags runs the real binary with an invalid value of every
// flag, on the command line and in the environment: each exits with status
// 2 and names the flag on stderr. So do an unknown flag, a flag without its
// value and a stray argument.
func TestBadInputFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel) // after the parallel subtests
	bin := buildLastcall(t)
	cases, queueFlags := badFlags(t)
	// The base of each case: a valid command line of the mode that reads
	// the flag, without the flag itself.
	base := func(flag string) []string {
		args := map[string]string{"node-name": "n"}
		if queueFlags[flag] {
			args = map[string]string{"mode": "queue", "queue-url": "http://127.0.0.1:1/q", "pod-name": "p", "pod-namespace": "ns"}
		}
		delete(args, flag)
		var out []string
		for k, v := range args {
			out = append(out, "--"+k+"="+v)
		}
		return out
	}
	// A case that does not fail validation runs lastcall, which must then
	// fail fast, not run: no cluster to reach.
	env := []string{"LASTCALL_KUBECONFIG=/no/such/kubeconfig", "LASTCALL_LISTEN_ADDRESS=127.0.0.1:0"}

	sem := make(chan struct{}, 4)
	run := func(t *testing.T, args, extraEnv []string) (int, string) {
		sem <- struct{}{}
		defer func() { <-sem }()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(rctx, bin, args...)
		cmd.Env = append(append(withoutLastcallEnv(), env...), extraEnv...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return ee.ExitCode(), stderr.String()
		case err != nil:
			t.Fatalf("running lastcall: %v", err)
		}
		return 0, stderr.String()
	}
	check := func(t *testing.T, args, extraEnv []string, want string) {
		status, stderr := run(t, args, extraEnv)
		if status != 2 || !strings.Contains(stderr, want) {
			t.Errorf("lastcall %q with %q: exit %d, stderr %q; want exit 2 and %q", args, extraEnv, status, stderr, want)
		}
	}

	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			args, extraEnv := base(c.flag), []string(nil)
			if c.env {
				extraEnv = []string{flagenv.EnvName(c.flag) + "=" + c.value}
			} else {
				args = append(args, "--"+c.flag+"="+c.value)
			}
			check(t, args, extraEnv, "--"+c.flag)
		})
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--node-name=n", "--no-such-flag=1"}, "unknown flag: --no-such-flag"},
		{"flag without its value", []string{"--node-name=n", "--mode"}, "flag needs an argument: --mode"},
		{"stray argument", []string{"--node-name=n", "stray"}, `unexpected argument "stray"`},
		{"argument after --", []string{"--node-name=n", "--", "--mode=queue"}, `unexpected argument "--mode=queue"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			check(t, c.args, nil, c.want)
		})
	}
}

// withoutLastcallEnv is this process's environment without LASTCALL_*
// variables, which would change what a case tests.
func withoutLastcallEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, flagenv.EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// TestBadInputMessages puts messages on the queue that lastcall can never
// act on: garbage as large as SQS takes, bodies that are not JSON or have
// fields of the wrong type, a spot warning from another account and one
// for an instance of another cluster. Each is deleted once, with its
// reason, and counted; the processor stays healthy and does not loop; no
// node is touched.
func TestBadInputMessages(t *testing.T) {
	e := newAWSEnv(t)
	ms := e.group(t, 2, nil)
	theirs := ms[0] // a real instance, without the managed tag
	tag := fmt.Sprintf("lastcall.io/e2e-badinput-%d", time.Now().UnixNano())

	spot := func(mutate func(map[string]any)) string {
		var ev map[string]any
		if err := json.Unmarshal([]byte(spotWarning("i-0badc0ffee0000001")), &ev); err != nil {
			t.Fatal(err)
		}
		mutate(ev)
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	const otherAccount = "210987654321"
	unparsable := []string{
		garbage(sqsMaxMessageSize - 1), // as large as SQS takes
		"not json at all",
		`{"version":"0","id":`, // truncated
		`[1,2,3]`,
		`null`,
		spot(func(ev map[string]any) { ev["detail"] = 5 }),
		spot(func(ev map[string]any) { ev["time"] = 1767225600 }),
		spot(func(ev map[string]any) { ev["detail-type"] = 5 }),
		spot(func(ev map[string]any) { ev["id"] = []int{1} }),
		spot(func(ev map[string]any) { ev["detail"] = map[string]any{"instance-id": 42} }),
		spot(func(ev map[string]any) { ev["time"] = "yesterday" }),
		spot(func(ev map[string]any) { delete(ev, "detail") }),
		`{"Type":"Notification","MessageId":"m-1","Message":5}`,
		`{"Type":"Notification","MessageId":"m-2","Message":"{\"detail-type\":"}`,
	}
	unknownInstance := []string{
		// resources is not read (AWS's own examples disagree on its
		// type): the event is about the instance its detail names, here
		// one that does not exist.
		spot(func(ev map[string]any) { ev["resources"] = "x" }),
		// An instance of another account: EC2 does not know it here.
		spot(func(ev map[string]any) {
			ev["account"] = otherAccount
			ev["resources"] = []string{"arn:aws:ec2:" + moto.Region + ":" + otherAccount + ":instance/i-0badc0ffee0000002"}
			ev["detail"] = map[string]any{"instance-id": "i-0badc0ffee0000002", "instance-action": "terminate"}
		}),
	}
	notOurs := []string{spotWarning(theirs.instance)}
	var bodies []string
	for _, group := range [][]string{unparsable, unknownInstance, notOurs} {
		bodies = append(bodies, group...)
	}
	for _, b := range bodies {
		e.send(t, b)
	}

	p := e.startProcessor(t, "badinput", "--managed-tag="+tag)
	eventually(t, "every message deleted", func() bool { return e.depth(t) == 0 })
	want := map[string]float64{
		"unparsable":       float64(len(unparsable)),
		"unknown-instance": float64(len(unknownInstance)),
		"not-our-cluster":  float64(len(notOurs)),
	}
	eventually(t, "every deletion counted", func() bool {
		return p.metric(t, "lastcall_queue_messages_deleted_total", nil) == float64(len(bodies))
	})
	for reason, n := range want {
		if got := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": reason}); got != n {
			t.Errorf("deleted{reason=%s} = %v, want %v", reason, got, n)
		}
	}
	for kind, n := range map[string]float64{"unparsable": float64(len(unparsable)), "spot-interruption": float64(len(unknownInstance) + len(notOurs))} {
		if got := p.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": kind}); got != n {
			t.Errorf("received{kind=%s} = %v, want %v", kind, got, n)
		}
	}

	// No loop: each message was received once, none is left to reappear,
	// and nothing more arrives.
	time.Sleep(2 * time.Second)
	for name, n := range map[string]float64{
		"lastcall_queue_receives_total":          float64(len(bodies)),
		"lastcall_queue_messages_released_total": 0,
		"lastcall_queue_errors_total":            0,
		"lastcall_actions_total":                 0,
	} {
		if got := p.metric(t, name, nil); got != n {
			t.Errorf("%s = %v, want %v", name, got, n)
		}
	}
	if d := e.depth(t); d != 0 {
		t.Errorf("queue depth %d, want 0", d)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := p.probe(t, path); code != 200 {
			t.Errorf("%s = %d after bad messages", path, code)
		}
	}
	for _, m := range ms {
		n, err := env.Client.CoreV1().Nodes().Get(context.Background(), m.node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if touched(n) {
			t.Errorf("node %s was touched: unschedulable %v, taints %v, annotations %v", n.Name, n.Spec.Unschedulable, n.Spec.Taints, n.Annotations)
		}
	}
}

// touched says whether lastcall changed n: cordoned, tainted or annotated.
func touched(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return true
	}
	for _, t := range n.Spec.Taints {
		if strings.HasPrefix(t.Key, "lastcall.io/") {
			return true
		}
	}
	for k := range n.Annotations {
		if strings.HasPrefix(k, "lastcall.io/") {
			return true
		}
	}
	return false
}

// sqsMaxMessageSize is SQS's classic limit on a message body, moto's too.
const sqsMaxMessageSize = 256 << 10

// garbage is n bytes of printable ASCII that is not JSON, as SQS accepts
// in a message body.
func garbage(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(' ' + r.IntN(95))
	}
	b[0] = '#'
	return string(b)
}
