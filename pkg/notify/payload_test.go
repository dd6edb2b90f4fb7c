package notify

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/test/golden"
)

// payloadCases are the notifications every payload is rendered for; each
// has its own key and phase, so none is deduplicated.
var payloadCases = []struct {
	name string
	m    Notification
}{
	{"received-drain", Notification{Phase: PhaseReceived, Node: "ip-10-0-1-7.eu-west-1.compute.internal", Instance: "i-0abc1234def567890",
		Kind: "spot-interruption", Action: "drain", Source: "imds-spot", Detail: "spot \"terminate\" at 12:34:56Z\n<b>second</b> line & ✓",
		Deadline: at.Add(118 * time.Second), Time: at, Mode: "agent", Cluster: "prod-eu"}},
	{"received-cordon", Notification{Phase: PhaseReceived, Node: "n2", Kind: "rebalance-recommendation", Action: "cordon",
		Source: "imds-rebalance", Time: at, Mode: "agent"}},
	{"finished-success", Notification{Phase: PhaseFinished, Node: "ip-10-0-1-7.eu-west-1.compute.internal", Instance: "i-0abc1234def567890",
		Kind: "asg-termination", Action: "drain", Source: "sqs", Deadline: at.Add(2 * time.Minute), Result: "success", Evicted: 14,
		Took: 1234 * time.Millisecond, Time: at.Add(3 * time.Second), Mode: "queue", Cluster: "prod-eu"}},
	{"finished-timeout", Notification{Phase: PhaseFinished, Node: "n3", Kind: "spot-interruption", Action: "drain", Source: "imds-spot",
		Deadline: at.Add(2 * time.Minute), Result: "timeout", Evicted: 5, Remaining: 1, Took: 2 * time.Minute, Time: at.Add(2 * time.Minute), Mode: "agent"}},
	{"finished-dry-run", Notification{Phase: PhaseFinished, Node: "n4", Kind: "preemption", Action: "drain", Source: "gce",
		Result: "dry_run", Time: at, Mode: "agent", Cluster: "dev"}},
}

// Every payload, sent through a Notifier to a webhook, is its golden file
// under testdata/payloads/ (indented there; go test -update rewrites
// them).
func TestPayloads(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"slack", Options{}},
		{"teams", Options{Format: FormatTeams}},
		{"json", Options{Format: FormatJSON}},
		{"pagerduty", Options{TemplateFile: filepath.Join("testdata", "templates", "pagerduty.json")}},
		{"custom", Options{TemplateFile: filepath.Join("testdata", "templates", "custom.json")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReceiver(t)
			tc.o.URL = r.URL
			n := newNotifier(t, tc.o, clock.RealClock{})
			run(t, n)
			for _, c := range payloadCases {
				n.Notify(c.m)
				p := r.next(t)
				if ct := p.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				var b bytes.Buffer
				if err := json.Indent(&b, p.body, "", "  "); err != nil {
					t.Fatalf("%s: body is not JSON: %v\n%s", c.name, err, p.body)
				}
				golden.Check(t, filepath.Join("testdata", "payloads", tc.name, c.name+".json"), strings.TrimSpace(b.String())+"\n")
			}
		})
	}
}

// The JSON form, and so the placeholders, are Notification's fields by
// their json tags, plus key and summary: a new field needs nothing more.
func TestJSONFieldsAreNotificationsFields(t *testing.T) {
	var want []string
	typ := reflect.TypeFor[Notification]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			t.Errorf("field %s has no json name: add a json tag", typ.Field(i).Name)
		}
		want = append(want, name)
	}
	want = append(want, "key", "summary")
	fields, err := fieldsOf(Notification{})
	if err != nil {
		t.Fatal(err)
	}
	var got, placeholders []string
	for _, f := range fields {
		got = append(got, f.name)
		placeholders = append(placeholders, `"${`+f.name+`}"`)
	}
	if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("JSON fields %q, want %q", got, want)
	}
	if _, err := ParseTemplate("[" + strings.Join(placeholders, ", ") + "]"); err != nil {
		t.Errorf("a template of every field: %v", err)
	}
}

// The JSON form's values: times in RFC 3339 UTC, an unknown deadline
// null, durations in seconds.
func TestJSONForm(t *testing.T) {
	local := time.FixedZone("CEST", 2*60*60)
	m := Notification{Phase: PhaseFinished, Node: "n1", Time: time.Date(2026, 3, 4, 14, 32, 58, 500_000_000, local), Took: 90 * time.Second}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"time": "2026-03-04T12:32:58.5Z", "deadline": nil, "took_seconds": 90.0, "key": "n1", "instance": "", "evicted": 0.0} {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v (%s)", k, got[k], v, b)
		}
	}
	fields, err := fieldsOf(m)
	if err != nil {
		t.Fatal(err)
	}
	text := map[string]string{}
	for _, f := range fields {
		text[f.name] = f.text
	}
	for k, v := range map[string]string{"time": "2026-03-04T12:32:58.5Z", "deadline": "", "took_seconds": "90", "evicted": "0", "phase": "finished"} {
		if text[k] != v {
			t.Errorf("text of %s = %q, want %q", k, text[k], v)
		}
	}
}
