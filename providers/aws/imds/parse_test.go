package imds

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/interruption"
)

// parseCase is one golden payload under testdata/<signal>/ and what its
// parse function must make of it.
type parseCase struct {
	file string
	want []interruption.Event // nil with malformed, or no notice
	// malformed: the parse must fail with ReasonMalformed, naming the path.
	malformed bool
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// checkParse runs parse over the cases of one signal.
func checkParse(t *testing.T, path string, cases []parseCase, parse func([]byte) ([]interruption.Event, error)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			body := readTestdata(t, tc.file)
			got, err := parse(body)
			if tc.malformed {
				if err == nil {
					t.Fatalf("parsed %q into %+v, want a malformed error", body, got)
				}
				if r := interruption.ReasonOf(err); r != interruption.ReasonMalformed {
					t.Errorf("reason %q, want %q (err %v)", r, interruption.ReasonMalformed, err)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the path %s", err, path)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse %q: %v", body, err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events %+v, want %d %+v", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.ID != w.ID || g.Kind != w.Kind || g.Action != w.Action || !g.Deadline.Equal(w.Deadline) {
					t.Errorf("event %d:\n got  %+v\n want %+v", i, g, w)
				}
				if w.Detail != "" && g.Detail != w.Detail {
					t.Errorf("event %d detail %q, want %q", i, g.Detail, w.Detail)
				}
				if g.Detail == "" {
					t.Errorf("event %d has no detail", i)
				}
			}
		})
	}
}

func spotEvent(action, at string) interruption.Event {
	return interruption.Event{
		ID:       interruption.NewID(interruption.KindSpotInterruption, action, at),
		Kind:     interruption.KindSpotInterruption,
		Action:   interruption.ActionDrain,
		Deadline: date(at),
	}
}

func TestParseSpot(t *testing.T) {
	terminate := spotEvent("terminate", "2017-09-18T08:22:00Z")
	terminate.Detail = "spot instance-action terminate at 2017-09-18T08:22:00Z"
	checkParse(t, spotPath, []parseCase{
		{file: "spot/terminate.json", want: []interruption.Event{terminate}},
		{file: "spot/stop.json", want: []interruption.Event{spotEvent("stop", "2017-09-18T08:22:00Z")}},
		{file: "spot/hibernate.json", want: []interruption.Event{spotEvent("hibernate", "2017-09-18T08:22:00Z")}},
		{file: "spot/aemm.json", want: []interruption.Event{spotEvent("terminate", "2030-01-02T03:04:05Z")}},
		{file: "spot/bad-json.json", malformed: true},
		{file: "spot/not-object.json", malformed: true},
		{file: "spot/null.json", malformed: true},
		{file: "spot/empty.json", malformed: true},
		{file: "spot/no-action.json", malformed: true},
		{file: "spot/no-time.json", malformed: true},
		{file: "spot/bad-time.json", malformed: true},
		{file: "spot/unknown-action.json", malformed: true},
	}, parseSpot)
}

func TestParseRebalance(t *testing.T) {
	rebalance := func(at string, a interruption.Action) interruption.Event {
		return interruption.Event{
			ID:     interruption.NewID(interruption.KindRebalance, at),
			Kind:   interruption.KindRebalance,
			Action: a,
			Detail: "rebalance recommendation at " + at,
		}
	}
	for _, action := range []interruption.Action{interruption.ActionCordon, interruption.ActionDrain} {
		t.Run(string(action), func(t *testing.T) {
			checkParse(t, rebalancePath, []parseCase{
				{file: "rebalance/valid.json", want: []interruption.Event{rebalance("2020-10-27T08:22:00Z", action)}},
				{file: "rebalance/aemm.json", want: []interruption.Event{rebalance("2030-01-02T03:00:00Z", action)}},
				{file: "rebalance/bad-json.json", malformed: true},
				{file: "rebalance/no-notice-time.json", malformed: true},
				{file: "rebalance/bad-time.json", malformed: true},
			}, func(b []byte) ([]interruption.Event, error) { return parseRebalance(b, action) })
		})
	}
}

func maintenanceEvent(id string, a interruption.Action, notBefore string) interruption.Event {
	e := interruption.Event{
		ID:     interruption.NewID(interruption.KindScheduledMaintenance, id),
		Kind:   interruption.KindScheduledMaintenance,
		Action: a,
	}
	if notBefore != "" {
		e.Deadline = date(notBefore)
	}
	return e
}

func TestParseMaintenance(t *testing.T) {
	const realID = "instance-event-0d59937288b749b32"
	active := maintenanceEvent(realID, interruption.ActionDrain, "2019-01-21T09:00:43Z")
	active.Detail = "scheduled maintenance system-reboot (instance-event-0d59937288b749b32) not before 2019-01-21T09:00:43Z"
	completed := maintenanceEvent(realID, interruption.ActionCancel, "")
	completed.Detail = "scheduled maintenance system-reboot (instance-event-0d59937288b749b32) completed"
	checkParse(t, maintenancePath, []parseCase{
		{file: "maintenance/imds-active.json", want: []interruption.Event{active}},
		{file: "maintenance/completed.json", want: []interruption.Event{completed}},
		{file: "maintenance/aemm-active.json", want: []interruption.Event{
			maintenanceEvent("instance-event-0aemm", interruption.ActionDrain, "2030-01-05T06:07:08Z")}},
		{file: "maintenance/aemm-canceled.json", want: []interruption.Event{
			maintenanceEvent("instance-event-0aemm", interruption.ActionCancel, "")}},
		{file: "maintenance/several.json", want: []interruption.Event{
			maintenanceEvent("instance-event-00000000000000001", interruption.ActionDrain, "2030-02-03T04:05:06Z"),
			maintenanceEvent("instance-event-00000000000000002", interruption.ActionCancel, ""),
		}},
		{file: "maintenance/zero-padded-day.json", want: []interruption.Event{
			maintenanceEvent("instance-event-padded", interruption.ActionDrain, "2030-01-05T06:07:08Z")}},
		{file: "maintenance/rfc3339.json", want: []interruption.Event{
			maintenanceEvent("instance-event-rfc3339", interruption.ActionDrain, "2030-01-05T06:07:08Z")}},
		{file: "maintenance/empty.json", want: nil},
		{file: "maintenance/bad-json.json", malformed: true},
		{file: "maintenance/object.json", malformed: true},
		{file: "maintenance/no-event-id.json", malformed: true},
		{file: "maintenance/bad-not-before.json", malformed: true},
		{file: "maintenance/no-not-before.json", malformed: true},
	}, func(b []byte) ([]interruption.Event, error) {
		events, unknown, err := parseMaintenance(b)
		if len(unknown) > 0 {
			t.Errorf("unknown values %+v", unknown)
		}
		return events, err
	})
}

// An event in a state lastcall does not know is left out and named; the
// events beside it are read as usual.
func TestParseMaintenanceUnknownState(t *testing.T) {
	for _, tc := range []struct {
		file    string
		want    []interruption.Event
		unknown []health.UnknownValue
	}{
		{file: "maintenance/unknown-state.json", unknown: []health.UnknownValue{{Entry: "instance-event-1", Field: "State", Value: "scheduled"}}},
		{file: "maintenance/unknown-state-beside-active.json",
			want: []interruption.Event{
				maintenanceEvent("instance-event-0000000000000000b", interruption.ActionDrain, "2030-02-04T04:05:06Z"),
				maintenanceEvent("instance-event-0000000000000000c", interruption.ActionCancel, ""),
			},
			unknown: []health.UnknownValue{{Entry: "instance-event-0000000000000000a", Field: "State", Value: "postponed"}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			events, unknown, err := parseMaintenance(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != len(tc.want) {
				t.Fatalf("events %+v, want %+v", events, tc.want)
			}
			for i, e := range events {
				w := tc.want[i]
				if e.ID != w.ID || e.Action != w.Action || !e.Deadline.Equal(w.Deadline) {
					t.Errorf("event %d: %+v, want %+v", i, e, w)
				}
			}
			if !slices.Equal(unknown, tc.unknown) {
				t.Errorf("unknown values %+v, want %+v", unknown, tc.unknown)
			}
		})
	}
}

func TestParseASGLifecycle(t *testing.T) {
	for _, tc := range []struct {
		file        string
		state       string
		terminating bool
		malformed   bool
	}{
		{file: "asglifecycle/inservice.txt", state: "InService"},
		{file: "asglifecycle/standby.txt", state: "Standby"},
		{file: "asglifecycle/terminated.txt", state: "Terminated", terminating: true},
		{file: "asglifecycle/terminated-newline.txt", state: "Terminated", terminating: true},
		{file: "asglifecycle/warmed-terminated.txt", state: "Warmed:Terminated", terminating: true},
		{file: "asglifecycle/aemm-terminated.txt", state: "Terminated", terminating: true},
		{file: "asglifecycle/unknown.txt", malformed: true},
		{file: "asglifecycle/empty.txt", malformed: true},
		{file: "asglifecycle/html.txt", malformed: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			state, terminating, err := parseASGLifecycle(readTestdata(t, tc.file))
			if tc.malformed {
				if r := interruption.ReasonOf(err); err == nil || r != interruption.ReasonMalformed {
					t.Fatalf("got %q, %v, %v; want a malformed error", state, terminating, err)
				}
				if !strings.Contains(err.Error(), asgLifecyclePath) {
					t.Errorf("error %q does not name the path", err)
				}
				return
			}
			if err != nil || state != tc.state || terminating != tc.terminating {
				t.Errorf("got %q, %v, %v; want %q, %v", state, terminating, err, tc.state, tc.terminating)
			}
		})
	}
}

func TestMalformedErrorTruncatesBody(t *testing.T) {
	body := []byte(`{"action":"terminate","time":"` + strings.Repeat("x", 5000) + `"}`)
	_, err := parseSpot(body)
	if err == nil {
		t.Fatal("no error")
	}
	if n := len(err.Error()); n > 600 {
		t.Errorf("error is %d bytes long, want the body truncated: %s", n, err)
	}
}
