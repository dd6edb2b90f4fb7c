package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what Parse makes of testdata/*.json")

// generated are inputs made by the test rather than kept in testdata/, each
// with its golden file there all the same.
func generated(t testing.TB) map[string][]byte {
	spot := readFile(t, "spot.json")
	return map[string][]byte{
		// A real event padded past the limit.
		"oversized": pad(spot, MaxBodySize+1),
	}
}

// pad appends spaces to a JSON body up to n bytes.
func pad(body []byte, n int) []byte {
	return append(bytes.Clone(body), bytes.Repeat([]byte(" "), n-len(body))...)
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inputs returns every test input by name: testdata/<name>.json, and the
// generated ones.
func inputs(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	in := generated(t)
	for _, f := range files {
		in[strings.TrimSuffix(filepath.Base(f), ".json")] = readFile(t, filepath.Base(f))
	}
	return in
}

// golden is what testdata/<name>.golden holds: the Message Parse made of
// the input, or its error.
type golden struct {
	Message *Message     `json:"message,omitempty"`
	Error   *goldenError `json:"error,omitempty"`
}

type goldenError struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func render(t *testing.T, m Message, err error) []byte {
	t.Helper()
	var g golden
	if err != nil {
		g.Error = &goldenError{Reason: ReasonOf(err), Message: err.Error()}
	} else {
		g.Message = &m
	}
	b, jerr := json.MarshalIndent(g, "", "  ")
	if jerr != nil {
		t.Fatal(jerr)
	}
	return append(b, '\n')
}

// TestParseGolden compares what Parse makes of every input with its golden
// file; go test -update rewrites them.
func TestParseGolden(t *testing.T) {
	in := inputs(t)
	for name, body := range in {
		t.Run(name, func(t *testing.T) {
			m, err := Parse(body)
			checkInvariants(t, m, err)
			got := render(t, m, err)
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatalf("%v (run go test -update to write it)", rerr)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Parse(%s) differs from %s (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", name, path, got, want)
			}
		})
	}
	goldens, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		if _, ok := in[strings.TrimSuffix(filepath.Base(g), ".golden")]; !ok {
			t.Errorf("%s has no input; remove it", g)
		}
	}
}

// want is what a test input must parse into, stated by hand so that a
// careless -update cannot bless a wrong result.
type want struct {
	kind         string
	verdict      Verdict
	reason       string
	interruption interruption.Kind
	instances    int
	// err is the ParseError reason when the input must not parse.
	err string
}

var wants = map[string]want{
	"spot":                                      {kind: KindSpotInterruption, verdict: Drain, interruption: interruption.KindSpotInterruption, instances: 1},
	"spot-stop":                                 {kind: KindSpotInterruption, verdict: Drain, interruption: interruption.KindSpotInterruption, instances: 1},
	"spot-sns":                                  {kind: KindSpotInterruption, verdict: Drain, interruption: interruption.KindSpotInterruption, instances: 1},
	"rebalance":                                 {kind: KindRebalance, verdict: Cordon, interruption: interruption.KindRebalance, instances: 1},
	"health-scheduled-change":                   {kind: KindScheduledChange, verdict: Drain, interruption: interruption.KindScheduledMaintenance, instances: 2},
	"health-closed":                             {kind: KindScheduledChange, verdict: Release, interruption: interruption.KindScheduledMaintenance, instances: 2},
	"health-canceled":                           {kind: KindScheduledChange, verdict: Release, interruption: interruption.KindScheduledMaintenance, instances: 2},
	"health-closed-no-arn":                      {kind: KindScheduledChange, verdict: Ignore, reason: IgnoreClosed},
	"health-no-entities":                        {kind: KindScheduledChange, verdict: Ignore, reason: IgnoreNoInstances},
	"health-ec2-issue":                          {kind: KindScheduledChange, verdict: Ignore, reason: IgnoreNotScheduledChange},
	"health-other-service":                      {kind: KindScheduledChange, verdict: Ignore, reason: IgnoreNotEC2},
	"health-bad-start-time":                     {err: ReasonBadTime},
	"health-wrong-type-entities":                {err: ReasonWrongType},
	"statechange-pending":                       {kind: KindStateChange, verdict: Ignore, reason: IgnoreStateRunning, instances: 1},
	"statechange-running":                       {kind: KindStateChange, verdict: Release, interruption: InterruptionStateChange, instances: 1},
	"statechange-stopping":                      {kind: KindStateChange, verdict: Drain, interruption: InterruptionStateChange, instances: 1},
	"statechange-stopped":                       {kind: KindStateChange, verdict: Drain, interruption: InterruptionStateChange, instances: 1},
	"statechange-shutting-down":                 {kind: KindStateChange, verdict: Drain, interruption: InterruptionStateChange, instances: 1},
	"statechange-terminated":                    {kind: KindStateChange, verdict: Drain, interruption: InterruptionStateChange, instances: 1},
	"statechange-missing-state":                 {err: ReasonMissingField},
	"capacity-reservation":                      {kind: KindCapacityReservation, verdict: Drain, interruption: InterruptionCapacityReservation, instances: 1},
	"capacity-reservation-no-termination-time":  {kind: KindCapacityReservation, verdict: Drain, interruption: InterruptionCapacityReservation, instances: 1},
	"capacity-reservation-bad-termination-time": {err: ReasonBadTime},
	"asg-terminate-eventbridge":                 {kind: KindASGTerminate, verdict: Drain, interruption: interruption.KindASGTermination, instances: 1},
	"asg-launch-eventbridge":                    {kind: KindASGLaunch, verdict: CompleteLaunch, instances: 1},
	"asg-transition-mismatch":                   {err: ReasonWrongType},
	"asg-terminate-bare":                        {kind: KindASGTerminate, verdict: Drain, interruption: interruption.KindASGTermination, instances: 1},
	"asg-terminate-sns":                         {kind: KindASGTerminate, verdict: Drain, interruption: interruption.KindASGTermination, instances: 1},
	"asg-launch-bare":                           {kind: KindASGLaunch, verdict: CompleteLaunch, instances: 1},
	"asg-launch-sns":                            {kind: KindASGLaunch, verdict: CompleteLaunch, instances: 1},
	"asg-bare-missing-token":                    {err: ReasonMissingField},
	"asg-bare-bad-time":                         {err: ReasonBadTime},
	"asg-bare-wrong-type":                       {err: ReasonWrongType},
	"asg-test-notification":                     {kind: KindASGTestNotification, verdict: Ignore, reason: IgnoreTestNotification},
	"asg-test-notification-sns":                 {kind: KindASGTestNotification, verdict: Ignore, reason: IgnoreTestNotification},
	"unknown-detail-type":                       {kind: KindUnknown, verdict: Ignore, reason: IgnoreUnknownKind},
	"unknown-source":                            {kind: KindUnknown, verdict: Ignore, reason: IgnoreUnknownKind},
	"unknown-asg-scaling-notification":          {kind: KindUnknown, verdict: Ignore, reason: IgnoreUnknownKind},
	"unknown-shape":                             {kind: KindUnknown, verdict: Ignore, reason: IgnoreUnknownKind},
	"sns-subscription-confirmation":             {kind: KindUnknown, verdict: Ignore, reason: IgnoreUnknownKind},
	"not-json":                                  {err: ReasonNotJSON},
	"empty":                                     {err: ReasonNotJSON},
	"truncated":                                 {err: ReasonNotJSON},
	"not-object":                                {err: ReasonWrongType},
	"null":                                      {err: ReasonWrongType},
	"wrong-type-instance-id":                    {err: ReasonWrongType},
	"wrong-type-time":                           {err: ReasonWrongType},
	"wrong-type-detail":                         {err: ReasonWrongType},
	"missing-instance-id":                       {err: ReasonMissingField},
	"missing-id":                                {err: ReasonMissingField},
	"missing-time":                              {err: ReasonMissingField},
	"missing-detail":                            {err: ReasonMissingField},
	"bad-time":                                  {err: ReasonBadTime},
	"sns-message-not-json":                      {err: ReasonNotJSON},
	"sns-message-wrong-type":                    {err: ReasonWrongType},
	"sns-missing-message":                       {err: ReasonMissingField},
	"oversized":                                 {err: ReasonTooLarge},
}

// TestParseKinds checks every input against wants.
func TestParseKinds(t *testing.T) {
	in := inputs(t)
	for name, body := range in {
		t.Run(name, func(t *testing.T) {
			w, ok := wants[name]
			if !ok {
				t.Fatalf("testdata/%s.json is not in wants", name)
			}
			m, err := Parse(body)
			if w.err != "" {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("Parse = %+v, %v; want a *ParseError %q", m, err, w.err)
				}
				if pe.Reason != w.err {
					t.Errorf("reason %q, want %q (%v)", pe.Reason, w.err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := want{kind: m.Kind, verdict: m.Verdict, reason: m.Reason, interruption: m.Interruption, instances: len(m.InstanceIDs)}
			if w.verdict == Ignore {
				got.instances = w.instances // an ignored message may name instances or not
			}
			if got != w {
				t.Errorf("got %+v, want %+v", got, w)
			}
		})
	}
	for name := range wants {
		if _, ok := in[name]; !ok {
			t.Errorf("wants lists %s, which is no input", name)
		}
	}
}

func parseFile(t *testing.T, name string) Message {
	t.Helper()
	m, err := Parse(readFile(t, name+".json"))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return m
}

func date(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestParseFields(t *testing.T) {
	t.Run("spot deadline is two minutes after the event", func(t *testing.T) {
		m := parseFile(t, "spot")
		if want := date(t, "2024-03-12T08:16:02Z"); !m.Deadline.Equal(want) {
			t.Errorf("deadline %v, want %v", m.Deadline, want)
		}
		if m.ID != "1e5527d7-bb36-4607-3370-4164db56a40e" || m.Account != "123456789012" || m.Region != "us-west-2" {
			t.Errorf("ID, account, region = %q, %q, %q", m.ID, m.Account, m.Region)
		}
	})
	t.Run("capacity reservation deadline", func(t *testing.T) {
		if m := parseFile(t, "capacity-reservation"); !m.Deadline.Equal(date(t, "2025-11-20T10:02:00Z")) {
			t.Errorf("deadline %v, want the instance-termination-time", m.Deadline)
		}
		if m := parseFile(t, "capacity-reservation-no-termination-time"); !m.Deadline.Equal(m.Time.Add(2 * time.Minute)) {
			t.Errorf("deadline %v, want time + 2m (time %v)", m.Deadline, m.Time)
		}
	})
	t.Run("health names every instance and starts at startTime", func(t *testing.T) {
		m := parseFile(t, "health-scheduled-change")
		if want := []string{"i-0a1b2c3d4e5f60718", "i-0f9e8d7c6b5a40312"}; !slices.Equal(m.InstanceIDs, want) {
			t.Errorf("instances %v, want %v", m.InstanceIDs, want)
		}
		if want := date(t, "2024-03-26T15:00:00Z"); !m.Deadline.Equal(want) || m.Deadline.Location() != time.UTC {
			t.Errorf("deadline %v, want %v in UTC", m.Deadline, want)
		}
	})
	t.Run("lifecycle action", func(t *testing.T) {
		want := &LifecycleAction{
			HookName:   "lastcall-drain",
			GroupName:  "eks-general-20240301",
			Token:      "0befcbdb-6ecd-498a-9ff7-ae9b54447cd6",
			InstanceID: "i-0633ac2b0d9769723",
			Transition: "autoscaling:EC2_INSTANCE_TERMINATING",
		}
		for _, name := range []string{"asg-terminate-eventbridge", "asg-terminate-bare", "asg-terminate-sns"} {
			if m := parseFile(t, name); !reflect.DeepEqual(m.Lifecycle, want) {
				t.Errorf("%s: lifecycle %+v, want %+v", name, m.Lifecycle, want)
			}
		}
		if m := parseFile(t, "asg-terminate-bare"); m.ID != want.Token || !m.Time.Equal(date(t, "2024-03-12T12:19:58.710Z")) {
			t.Errorf("bare notification ID %q time %v, want the token and its Time", m.ID, m.Time)
		}
	})
	t.Run("SNS changes nothing", func(t *testing.T) {
		for _, pair := range [][2]string{
			{"spot", "spot-sns"},
			{"asg-terminate-bare", "asg-terminate-sns"},
			{"asg-launch-bare", "asg-launch-sns"},
			{"asg-test-notification", "asg-test-notification-sns"},
		} {
			if a, b := parseFile(t, pair[0]), parseFile(t, pair[1]); !reflect.DeepEqual(a, b) {
				t.Errorf("%s and %s differ:\n%+v\n%+v", pair[0], pair[1], a, b)
			}
		}
	})
	t.Run("an ID without id is derived from the content", func(t *testing.T) {
		a, b := parseFile(t, "unknown-shape"), parseFile(t, "unknown-shape")
		if a.ID == "" || a.ID != b.ID {
			t.Errorf("IDs %q and %q, want equal and not empty", a.ID, b.ID)
		}
		if c, _ := Parse([]byte(`{"hello":"there"}`)); c.ID == a.ID {
			t.Errorf("two bodies have the ID %q", a.ID)
		}
	})
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, reason string
		// mention must appear in the error: the field at fault.
		mention string
	}{
		{"missing instance id", `{"id":"1","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"2024-03-12T08:10:41Z","detail":{}}`, ReasonMissingField, "detail.instance-id"},
		{"null detail", `{"id":"1","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"2024-03-12T08:10:41Z","detail":null}`, ReasonMissingField, "detail"},
		{"instance id number", `{"id":"1","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"2024-03-12T08:10:41Z","detail":{"instance-id":5}}`, ReasonWrongType, "detail.instance-id is a JSON number, want string"},
		{"entities not an array", `{"id":"1","detail-type":"AWS Health Event","source":"aws.health","time":"2024-03-12T08:10:41Z","detail":{"service":"EC2","eventTypeCategory":"scheduledChange","affectedEntities":{}}}`, ReasonWrongType, "detail.affectedEntities is a JSON object, want array"},
		{"id number", `{"id":7,"detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2"}`, ReasonWrongType, "id is a JSON number"},
		{"bad time", `{"id":"1","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"now","detail":{"instance-id":"i-1"}}`, ReasonBadTime, `time "now"`},
		{"bad start time", `{"id":"1","detail-type":"AWS Health Event","source":"aws.health","time":"2024-03-12T08:10:41Z","detail":{"service":"EC2","eventTypeCategory":"scheduledChange","startTime":"Tue, 26 Mar 2024 15:00:00 PST","affectedEntities":[{"entityValue":"i-1"}]}}`, ReasonBadTime, "detail.startTime"},
		{"lifecycle without hook", `{"Service":"AWS Auto Scaling","Time":"2024-03-12T12:19:58.710Z","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING","EC2InstanceId":"i-1","LifecycleActionToken":"t","AutoScalingGroupName":"g"}`, ReasonMissingField, "LifecycleHookName"},
		{"lifecycle without time", `{"Service":"AWS Auto Scaling","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING","EC2InstanceId":"i-1","LifecycleActionToken":"t","AutoScalingGroupName":"g","LifecycleHookName":"h"}`, ReasonMissingField, "Time"},
		{"SNS message is an array", `{"Type":"Notification","Message":"[1,2]"}`, ReasonWrongType, "SNS notification Message"},
		{"SNS message truncated", `{"Type":"Notification","Message":"{\"id\":"}`, ReasonNotJSON, "SNS notification Message"},
		{"SNS message null", `{"Type":"Notification","Message":null}`, ReasonMissingField, "Message"},
		{"string body", `"hello"`, ReasonWrongType, "the body is a JSON string, want object"},
		{"number body", `12`, ReasonWrongType, "the body is a JSON number"},
		{"trailing garbage", `{"id":"1"} x`, ReasonNotJSON, "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.body))
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("Parse = %+v, %v (%T); want a *ParseError", m, err, err)
			}
			if pe.Reason != tc.reason {
				t.Errorf("reason %q, want %q (%v)", pe.Reason, tc.reason, err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			if !reflect.DeepEqual(m, Message{}) {
				t.Errorf("message %+v with an error, want zero", m)
			}
		})
	}
}

func TestMaxBodySize(t *testing.T) {
	spot := readFile(t, "spot.json")
	if _, err := Parse(pad(spot, MaxBodySize)); err != nil {
		t.Errorf("a body of exactly MaxBodySize: %v", err)
	}
	if _, err := Parse(pad(spot, MaxBodySize+1)); ReasonOf(err) != ReasonTooLarge {
		t.Errorf("a body over MaxBodySize: %v, want %s", err, ReasonTooLarge)
	}
}

func TestParseHealthTime(t *testing.T) {
	want := date(t, "2021-06-05T15:10:09Z")
	for _, s := range []string{"Sat, 05 Jun 2021 15:10:09 GMT", "Sat, 05 Jun 2021 17:10:09 +0200", "2021-06-05T15:10:09Z"} {
		got, err := parseHealthTime("startTime", s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseHealthTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"Sat, 05 Jun 2021 15:10:09 PST", "05 Jun 2021", ""} {
		if _, err := parseHealthTime("startTime", s); ReasonOf(err) != ReasonBadTime {
			t.Errorf("parseHealthTime(%q): %v, want %s", s, err, ReasonBadTime)
		}
	}
}

func TestReasonOf(t *testing.T) {
	err := inContext(missing("x"), "outer")
	if ReasonOf(err) != ReasonMissingField || ReasonOf(errors.New("other")) != "" || ReasonOf(nil) != "" {
		t.Errorf("ReasonOf misclassifies")
	}
	if wrapped := errors.Join(errors.New("a"), err); ReasonOf(wrapped) != ReasonMissingField {
		t.Errorf("ReasonOf does not see through wrapping")
	}
}

// checkInvariants holds for every Parse result: an error is a *ParseError
// with a known reason and a zero Message; a Message has a known kind, an
// ID, a verdict with its reason, and instances to act on.
func checkInvariants(t *testing.T, m Message, err error) {
	t.Helper()
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v (%T) is not a *ParseError", err, err)
		}
		switch pe.Reason {
		case ReasonNotJSON, ReasonWrongType, ReasonMissingField, ReasonBadTime, ReasonTooLarge:
		default:
			t.Fatalf("error %v has unknown reason %q", err, pe.Reason)
		}
		if !reflect.DeepEqual(m, Message{}) {
			t.Fatalf("error %v comes with message %+v", err, m)
		}
		return
	}
	switch m.Kind {
	case KindSpotInterruption, KindRebalance, KindScheduledChange, KindStateChange, KindCapacityReservation,
		KindASGTerminate, KindASGLaunch, KindASGTestNotification, KindUnknown:
	default:
		t.Fatalf("unknown kind %q in %+v", m.Kind, m)
	}
	if m.ID == "" {
		t.Fatalf("no ID in %+v", m)
	}
	if m.Detail == "" {
		t.Fatalf("no Detail in %+v", m)
	}
	switch m.Verdict {
	case Ignore:
		if m.Reason == "" {
			t.Fatalf("Ignore without a reason: %+v", m)
		}
		return
	case Drain, Cordon:
		if m.Interruption == "" {
			t.Fatalf("%s without an interruption kind: %+v", m.Verdict, m)
		}
	case Release:
		if m.Interruption == "" || len(m.Withdraws) == 0 || slices.Contains(m.Withdraws, "") {
			t.Fatalf("release without an interruption kind or what it withdraws: %+v", m)
		}
	case CompleteLaunch:
	default:
		t.Fatalf("unknown verdict %q in %+v", m.Verdict, m)
	}
	if m.Reason != "" {
		t.Fatalf("reason %q with verdict %s", m.Reason, m.Verdict)
	}
	if len(m.InstanceIDs) == 0 || slices.Contains(m.InstanceIDs, "") {
		t.Fatalf("verdict %s without instances: %+v", m.Verdict, m)
	}
	isLifecycle := m.Kind == KindASGTerminate || m.Kind == KindASGLaunch
	if isLifecycle != (m.Lifecycle != nil) {
		t.Fatalf("kind %s with lifecycle %+v", m.Kind, m.Lifecycle)
	}
	if l := m.Lifecycle; l != nil && (l.Token == "" || l.HookName == "" || l.GroupName == "" || l.InstanceID != m.InstanceIDs[0]) {
		t.Fatalf("incomplete lifecycle action %+v", l)
	}
}
