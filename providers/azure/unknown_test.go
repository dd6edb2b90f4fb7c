package azure

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// An event with an EventType or an EventStatus Azure may add one day sits
// beside an event lastcall knows: the known event is acted on, and the
// unknown value is logged and counted, without failing the read. An event
// of an unknown type is left out (what it asks for is unknown); one of a
// known type in an unknown status is kept, as its type asks.
func TestUnknownValueBesideValidEvent(t *testing.T) {
	t.Parallel()
	notBefore := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	entry := func(id, eventType, status string) string {
		return fmt.Sprintf(`{"EventId": %q, "EventType": %q, "ResourceType": "VirtualMachine", "Resources": [%q],
			"EventStatus": %q, "NotBefore": %q, "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}`,
			id, eventType, vm, status, azuremeta.FormatTime(notBefore))
	}
	valid := entry("bbbbbbbb-0000-0000-0000-00000000000b", "Preempt", "Scheduled")
	validEvent := interruption.Event{
		ID: interruption.NewID(interruption.KindPreemption, "bbbbbbbb-0000-0000-0000-00000000000b"), Kind: interruption.KindPreemption,
		Action: interruption.ActionDrain, Deadline: notBefore,
	}
	for _, tc := range []struct {
		name, unknown, value, id string
		want                     []interruption.Event
	}{
		{
			name: "EventType", value: "Hibernate", id: "aaaaaaaa-0000-0000-0000-00000000000a",
			unknown: entry("aaaaaaaa-0000-0000-0000-00000000000a", "Hibernate", "Scheduled"),
			want:    []interruption.Event{validEvent},
		},
		{
			name: "EventStatus", value: "Postponed", id: "aaaaaaaa-0000-0000-0000-00000000000a",
			unknown: entry("aaaaaaaa-0000-0000-0000-00000000000a", "Reboot", "Postponed"),
			want: []interruption.Event{{
				ID: interruption.NewID(interruption.KindHostMaintenance, "aaaaaaaa-0000-0000-0000-00000000000a"), Kind: interruption.KindHostMaintenance,
				Action: interruption.ActionDrain, Deadline: notBefore,
			}, validEvent},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := startFake(t)
			fake.SetRawDocument([]byte(`{"DocumentIncarnation": 3, "Events": [` + tc.unknown + `, ` + valid + `]}`))
			var logs interruptiontest.Log
			log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), nil))
			health := interruptiontest.NewHealth()
			sources, err := Sources(nil, Options{Endpoint: fake.URL(), Interval: pollInterval, VMName: vm}, health, log, nil)
			if err != nil {
				t.Fatal(err)
			}
			out := run(t, sources[0])

			r, n := health.WaitFor(t, "a read", 0, 1, func(interruptiontest.Record) bool { return true })
			if !r.OK {
				t.Fatalf("the read failed (%s: %v): an unknown %s beside a valid event must not spoil the document", r.Reason, r.Err, tc.name)
			}
			for _, w := range tc.want {
				checkEvent(t, next(t, out), w)
			}
			health.WaitFor(t, "more reads", n, 2, success)
			quiet(t, out, 2*pollInterval)
			if got := health.Unknowns(SourceName); got == 0 {
				t.Errorf("the unknown %s was not counted", tc.name)
			}
			l := logs.String()
			if !strings.Contains(l, tc.value) || !strings.Contains(l, tc.id) {
				t.Errorf("no log names the unknown %s %q and its event:\n%s", tc.name, tc.value, l)
			}
			if c := strings.Count(l, tc.value); c != 1 {
				t.Errorf("the unknown %s logged %d times over several reads, want once", tc.name, c)
			}
		})
	}
}
