package azure

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

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseNow is the time parseDocument is given: the deadline of an event
// without NotBefore.
func parseNow() time.Time { return time.Date(2016, 9, 19, 18, 0, 0, 0, time.UTC) }

func gmt(s string) time.Time {
	t, err := time.Parse(time.RFC1123, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestParseDocument(t *testing.T) {
	t.Parallel()
	type want struct {
		eventID  string
		kind     interruption.Kind
		action   interruption.Action
		deadline time.Time
		started  bool
	}
	const sept19 = "Mon, 19 Sep 2016 18:29:47 GMT"
	for _, tc := range []struct {
		file        string
		vmName      string
		drainFreeze bool
		want        []want
	}{
		{file: "preempt.json", want: []want{{"602d9444-d2cd-49c7-8624-8643e7171297", interruption.KindPreemption, interruption.ActionDrain, gmt(sept19), false}}},
		{file: "terminate.json", want: []want{{"7f4f3f5b-4a3c-4a5e-9d6e-0a1b2c3d4e5f", interruption.KindTermination, interruption.ActionDrain, gmt("Tue, 20 Sep 2016 08:00:00 GMT"), false}}},
		{file: "reboot.json", want: []want{{"f020ba2e-3bc0-4c40-a10b-86575a9eabd5", interruption.KindHostMaintenance, interruption.ActionDrain, gmt(sept19), false}}},
		{file: "redeploy.json", want: []want{{"5a1c6f3e-1111-4c40-a10b-86575a9eabd5", interruption.KindHostMaintenance, interruption.ActionDrain, gmt(sept19), false}}},
		{file: "freeze.json", want: []want{{"8e4b39c5-2222-4c40-a10b-86575a9eabd5", interruption.KindHostMaintenance, interruption.ActionNotify, gmt(sept19), false}}},
		{file: "freeze.json", drainFreeze: true, want: []want{{"8e4b39c5-2222-4c40-a10b-86575a9eabd5", interruption.KindHostMaintenance, interruption.ActionDrain, gmt(sept19), false}}},
		{file: "started.json", want: []want{{"602d9444-d2cd-49c7-8624-8643e7171297", interruption.KindPreemption, interruption.ActionDrain, parseNow(), true}}},
		{file: "empty.json"},
		{file: "pretty-extra-keys.json", want: []want{{"4CAEA225-A741-474D-A72E-428C86FCD853", interruption.KindHostMaintenance, interruption.ActionDrain, gmt("Thu, 22 Jul 2021 04:50:17 GMT"), false}}},
		{file: "several.json", want: []want{
			{"aaaaaaaa-0000-0000-0000-000000000001", interruption.KindHostMaintenance, interruption.ActionDrain, gmt("Wed, 21 Sep 2016 10:00:00 GMT"), false},
			{"aaaaaaaa-0000-0000-0000-000000000002", interruption.KindHostMaintenance, interruption.ActionNotify, gmt("Wed, 21 Sep 2016 11:00:00 GMT"), false},
			{"aaaaaaaa-0000-0000-0000-000000000003", interruption.KindPreemption, interruption.ActionDrain, gmt("Wed, 21 Sep 2016 12:00:00 GMT"), false},
		}},
		// VMName keeps this VM's events, the name compared without case.
		{file: "several.json", vmName: "vm1", want: []want{
			{"aaaaaaaa-0000-0000-0000-000000000002", interruption.KindHostMaintenance, interruption.ActionNotify, gmt("Wed, 21 Sep 2016 11:00:00 GMT"), false},
			{"aaaaaaaa-0000-0000-0000-000000000003", interruption.KindPreemption, interruption.ActionDrain, gmt("Wed, 21 Sep 2016 12:00:00 GMT"), false},
		}},
		{file: "several.json", vmName: "vm3"},
		{file: "preempt.json", vmName: "VM1", want: []want{{"602d9444-d2cd-49c7-8624-8643e7171297", interruption.KindPreemption, interruption.ActionDrain, gmt(sept19), false}}},
	} {
		t.Run(tc.file+"/vm="+tc.vmName+"/drainFreeze="+map[bool]string{false: "no", true: "yes"}[tc.drainFreeze], func(t *testing.T) {
			t.Parallel()
			body := readTestdata(t, tc.file)
			got, unknown, err := parseDocument(body, tc.vmName, tc.drainFreeze, parseNow())
			if err != nil {
				t.Fatalf("parse %s: %v", body, err)
			}
			if len(unknown) > 0 {
				t.Errorf("unknown values %+v", unknown)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				e := g.event
				if e.ID != interruption.NewID(w.kind, w.eventID) || e.Kind != w.kind || e.Action != w.action ||
					!e.Deadline.Equal(w.deadline) || g.eventID != w.eventID || g.started != w.started {
					t.Errorf("event %d: got %+v (EventId %s, started %v), want %+v", i, e, g.eventID, g.started, w)
				}
				if !strings.Contains(e.Detail, w.eventID) {
					t.Errorf("event %d: detail %q does not name the EventId", i, e.Detail)
				}
				if e.Source != "" || !e.Observed.IsZero() {
					t.Errorf("event %d: Source or Observed set by the parser: %+v", i, e)
				}
			}
		})
	}
}

func TestParseDocumentMalformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		want string // in the error
	}{
		{"bad-json.json", "not a scheduled events document"},
		{"not-json.json", "not a scheduled events document"},
		{"array.json", "not a scheduled events document"},
		{"incarnation-string.json", "not a scheduled events document"},
		{"duration-string.json", "not a scheduled events document"},
		{"resources-string.json", "not a scheduled events document"},
		{"no-events.json", "no Events"},
		{"no-incarnation.json", "no DocumentIncarnation"},
		{"error-body.json", "no DocumentIncarnation"},
		{"bad-not-before.json", "NotBefore"},
		{"no-event-id.json", "no EventId"},
		{"duplicate-id.json", "listed twice"},
		// An entry for another VM is checked too.
		{"other-vm-malformed.json", "NotBefore"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			body := readTestdata(t, tc.file)
			for _, vm := range []string{"", "vm1"} {
				got, _, err := parseDocument(body, vm, false, parseNow())
				if err == nil {
					t.Fatalf("vm %q: parsed %q into %+v, want a malformed error", vm, body, got)
				}
				if r := interruption.ReasonOf(err); r != interruption.ReasonMalformed {
					t.Errorf("reason %q, want %q (err %v)", r, interruption.ReasonMalformed, err)
				}
				msg := err.Error()
				if !strings.Contains(msg, tc.want) || !strings.Contains(msg, eventsPath) {
					t.Errorf("error %q does not say %q and name %s", msg, tc.want, eventsPath)
				}
				if len(msg) > 3*bodyExcerpt+200 {
					t.Errorf("error of %d bytes: bodies are not cut", len(msg))
				}
			}
		})
	}
}

// An EventType or EventStatus lastcall does not know is named, for this
// VM's events only, and the rest of the document is used: an event of an
// unknown type is left out, one of a known type in an unknown status kept
// and never approved.
func TestParseDocumentUnknown(t *testing.T) {
	t.Parallel()
	const sept19 = "Mon, 19 Sep 2016 18:29:47 GMT"
	unknownType := health.UnknownValue{Entry: "x-1", Field: "EventType", Value: "Hibernate"}
	for _, tc := range []struct {
		file    string
		vmName  string
		want    []string // EventIds of the notices
		unknown []health.UnknownValue
	}{
		{file: "unknown-type.json", unknown: []health.UnknownValue{unknownType}},
		{file: "unknown-type.json", vmName: "vm1", unknown: []health.UnknownValue{unknownType}},
		{file: "unknown-type.json", vmName: "vm2"},
		{file: "unknown-status.json", want: []string{"x-1"}, unknown: []health.UnknownValue{{Entry: "x-1", Field: "EventStatus", Value: "Completed"}}},
		{file: "unknown-type-beside-preempt.json", vmName: "vm1", want: []string{"x-2"}, unknown: []health.UnknownValue{unknownType}},
		{file: "long-unknown-type.json", unknown: []health.UnknownValue{{Entry: "x-1", Field: "EventType", Value: strings.Repeat("Y", 500)}}},
	} {
		t.Run(tc.file+"/vm="+tc.vmName, func(t *testing.T) {
			t.Parallel()
			got, unknown, err := parseDocument(readTestdata(t, tc.file), tc.vmName, false, parseNow())
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, n := range got {
				ids = append(ids, n.eventID)
				if n.event.Action != interruption.ActionDrain || !n.event.Deadline.Equal(gmt(sept19)) {
					t.Errorf("notice %+v, want a drain by %s", n.event, sept19)
				}
				if n.eventID == "x-1" && !n.started {
					t.Error("an event in an unknown status may be approved")
				}
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("notices of %v, want %v", ids, tc.want)
			}
			if !slices.Equal(unknown, tc.unknown) {
				t.Errorf("unknown values %+v, want %+v", unknown, tc.unknown)
			}
		})
	}
}

// FuzzParseDocument checks that no input panics and that every result is
// either malformed or a list of events with IDs.
func FuzzParseDocument(f *testing.F) {
	for _, name := range []string{"preempt.json", "several.json", "started.json", "bad-json.json", "empty.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		notices, _, err := parseDocument(body, "vm1", false, parseNow())
		if err != nil {
			if interruption.ReasonOf(err) != interruption.ReasonMalformed {
				t.Fatalf("error %v is not malformed", err)
			}
			return
		}
		for _, n := range notices {
			if n.event.ID == "" || n.eventID == "" || n.event.Deadline.IsZero() {
				t.Fatalf("incomplete notice %+v", n)
			}
		}
	})
}
