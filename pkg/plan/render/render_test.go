package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/plan"
)

var now = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestTable(t *testing.T) {
	at := now.Add(-3 * time.Second)
	for _, tc := range []struct {
		name string
		p    plan.Plan
		want []string // lines, in order, among the output's
	}{
		{"empty node", plan.Plan{Node: "n", Now: now, Deadline: now.Add(time.Minute), Margin: plan.Seconds(5 * time.Second),
			Policy: drain.PolicyRespect, Finish: now, Fits: true},
			[]string{"Deadline:                 2026-03-04T05:07:07Z (in 1m0s)", "Eviction groups", "  none",
				"PodDisruptionBudgets allowing 0 disruptions", "  none", "Skipped", "  none",
				"Estimated finish: +0s of 1m0s (deadline less margin at +55s): fits"}},
		{"no deadline", plan.Plan{Node: "n", Now: now, Finish: now.Add(30 * time.Second), Fits: true},
			[]string{"Deadline:                 none", "Estimated finish: +30s (no deadline): fits"}},
		{"each reason once, override in the past", plan.Plan{Node: "n", Now: now, Deadline: now.Add(time.Minute),
			Groups: []plan.Group{{Name: "non-critical", Start: now, Pods: []plan.Pod{{Namespace: "a", Name: "p", OverrideAt: &at,
				Blockers: []plan.Blocker{{Reason: plan.ReasonEmptyDir, Detail: "emptyDir volume x is lost"}, {Reason: plan.ReasonPDB},
					{Reason: plan.ReasonEmptyDir, Detail: "emptyDir volume y is lost"}, {Reason: plan.ReasonPDB}}}}}},
			Problems: []string{"100% wrong"}},
			[]string{"a/p             -           0s     0s       pdb-allows-no-disruption (overridden at -3s), emptydir",
				"a/p             emptyDir volume x is lost", "a/p             emptyDir volume y is lost",
				"does NOT fit", "  - 100% wrong"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, tc.p, FormatTable); err != nil {
				t.Fatal(err)
			}
			inOrder(t, b.String(), tc.want)
		})
	}
}

// TestRoundTrip writes a plan in each machine format and reads it back:
// JSON's field names, durations in seconds, nothing lost.
func TestRoundTrip(t *testing.T) {
	at := now.Add(85 * time.Second)
	p := plan.Plan{Node: "n", Now: now, Deadline: now.Add(2 * time.Minute), Margin: plan.Seconds(5 * time.Second), Policy: drain.PolicyGracefulOverride,
		Groups: []plan.Group{{Name: "non-critical", Start: now, Pods: []plan.Pod{{Namespace: "a", Name: "p", Controller: "ReplicaSet",
			Grace: plan.Seconds(30 * time.Second), Clamped: plan.Seconds(30 * time.Second), OverrideAt: &at,
			Blockers: []plan.Blocker{{Reason: plan.ReasonPDB, Detail: "d"}}, KubectlDrain: "evict"}}}},
		Skipped: []plan.Skipped{}, Budgets: []plan.Budget{{Namespace: "a", Name: "b", Pods: []string{"p"}}},
		NodeBlockers: []plan.Blocker{{Reason: plan.ReasonLBNoDelay, Detail: "x"}},
		KubectlDrain: &plan.KubectlDrain{Command: "kubectl drain n", Refused: []string{}},
		Finish:       now.Add(2 * time.Minute), Fits: true, Problems: []string{}}
	for _, tc := range []struct {
		format    string
		says      []string
		unmarshal func([]byte, any) error
	}{
		{FormatJSON, []string{"\n  \"node\": \"n\",\n", `"clampedGraceSeconds": 30,`}, json.Unmarshal},
		{FormatYAML, []string{"\nnode: \"n\"\n", "  clampedGraceSeconds: 30\n"}, func(b []byte, v any) error { return yaml.Unmarshal(b, v) }},
	} {
		var b bytes.Buffer
		if err := Write(&b, p, tc.format); err != nil {
			t.Fatal(err)
		}
		for _, s := range tc.says {
			if !strings.Contains(b.String(), s) {
				t.Errorf("%s: %q missing (indented by two spaces, durations in seconds):\n%s", tc.format, s, b.String())
			}
		}
		var back plan.Plan
		if err := tc.unmarshal(b.Bytes(), &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, p) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", tc.format, back, p)
		}
	}
}

func TestWide(t *testing.T) {
	at := now.Add(85 * time.Second)
	p := plan.Plan{Node: "n", Now: now, Deadline: now.Add(2 * time.Minute),
		Groups: []plan.Group{{Name: "non-critical", Start: now, Pods: []plan.Pod{
			{Namespace: "a", Name: "p", Controller: "ReplicaSet", OverrideAt: &at, Blockers: []plan.Blocker{{Reason: plan.ReasonPDB}}, KubectlDrain: "evict"},
			{Namespace: "a", Name: "bare", KubectlDrain: "refuse: Pods that declare no controller (use --force to override)"}}}},
		Skipped: []plan.Skipped{{Namespace: "a", Name: "done", Rule: "finished", KubectlDrain: "delete"}}}
	for _, tc := range []struct {
		name string
		kd   *plan.KubectlDrain
		want []string
		not  []string
	}{
		{"from lastcall", nil,
			[]string{"NAMESPACE/NAME  CONTROLLER  GRACE  CLAMPED  OVERRIDE AT  BLOCKERS", "a/p             ReplicaSet  0s     0s       +1m25s       pdb-allows-no-disruption"},
			[]string{"KUBECTL DRAIN"}},
		{"from the plugin", &plan.KubectlDrain{Command: "kubectl drain n --ignore-daemonsets --delete-emptydir-data",
			Refused: []string{"cannot delete Pods that declare no controller (use --force to override): a/bare"}},
			[]string{"OVERRIDE AT  BLOCKERS", "KUBECTL DRAIN", "evict", "refuse: Pods that declare no controller",
				"a/done", "finished", "delete", "kubectl drain (kubectl drain n --ignore-daemonsets --delete-emptydir-data)",
				"  refuses the node: cannot delete Pods that declare no controller (use --force to override): a/bare"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := p
			p.KubectlDrain = tc.kd
			var b bytes.Buffer
			if err := Write(&b, p, FormatWide); err != nil {
				t.Fatal(err)
			}
			inOrder(t, b.String(), tc.want)
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("%q in:\n%s", n, b.String())
				}
			}
		})
	}
}

// inOrder fails unless out holds each of want, in order.
func inOrder(t *testing.T, out string, want []string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("%q missing, or out of order, in:\n%s", w, out)
		}
		rest = rest[i+len(w):]
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrors(t *testing.T) {
	if err := Write(&bytes.Buffer{}, plan.Plan{}, "xml"); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("unknown format: %v", err)
	}
	for _, f := range Formats {
		if err := Write(failingWriter{}, plan.Plan{Now: now}, f); err == nil {
			t.Errorf("%s to a broken writer: no error", f)
		}
	}
}
