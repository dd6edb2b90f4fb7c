package gce

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// FuzzParseValues checks both parsers over any value the metadata server
// might answer (trimmed, as run.answer does), any instance ID and any notice
// still active: no panic, the same answer every time, only the documented
// values accepted, an error that names the path and stays short, and events
// that agree with the value and withdraw only the active notice.
func FuzzParseValues(f *testing.F) {
	for _, v := range []string{
		preemptedTrue, preemptedFalse, "true", "", " TRUE\n", "TRUEE",
		maintenanceNone, maintenanceMigrate, maintenanceTerminate, "SOMETHING_NEW", "NONE\n",
		strings.Repeat("X", 1000),
	} {
		for active := range uint8(4) {
			f.Add(v, "4520031799277581759", active)
		}
	}
	f.Fuzz(func(t *testing.T, value, instanceID string, activeSel uint8) {
		value = strings.TrimSpace(value)
		in := Instance{Name: "vm", Zone: "us-central1-a", ID: instanceID, ProvisioningModel: ProvisioningSpot}
		active := activeNotice(in, activeSel)
		for _, p := range []struct {
			path  string
			parse parseFunc
			valid []string
		}{
			{pathPreempted, parsePreempted, []string{preemptedTrue, preemptedFalse}},
			{pathMaintenance, parseMaintenance, []string{maintenanceNone, maintenanceMigrate, maintenanceTerminate}},
		} {
			events, err := p.parse(value, in, active)
			again, againErr := p.parse(value, in, active)
			if !reflect.DeepEqual(events, again) || (err == nil) != (againErr == nil) || (err != nil && err.Error() != againErr.Error()) {
				t.Fatalf("%s: not deterministic for %q", p.path, value)
			}
			valid := false
			for _, v := range p.valid {
				valid = valid || v == value
			}
			if valid != (err == nil) {
				t.Fatalf("%s: %q gave %+v, %v; want an error only for values other than %v", p.path, value, events, err, p.valid)
			}
			if err != nil {
				if events != nil {
					t.Fatalf("%s: events %+v with error %v", p.path, events, err)
				}
				if msg := err.Error(); !strings.Contains(msg, p.path) || len(msg) > 8*maxExcerpt+200 {
					t.Fatalf("%s: error %q does not name the path, or is not cut", p.path, msg)
				}
				continue
			}
			checkEvents(t, p.path, value, active, events)
		}
	})
}

// activeNotice is the notice a source may hold when a value arrives: none,
// a host maintenance stop or migration of this instance, or a preemption.
func activeNotice(in Instance, sel uint8) *interruption.Event {
	switch sel % 4 {
	case 1:
		return &interruption.Event{ID: interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, in.ID, maintenanceTerminate),
			Kind: interruption.KindHostMaintenance, Action: interruption.ActionDrain}
	case 2:
		return &interruption.Event{ID: interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, in.ID, maintenanceMigrate),
			Kind: interruption.KindHostMaintenance, Action: interruption.ActionNotify}
	case 3:
		return &interruption.Event{ID: interruption.NewID(interruption.KindPreemption, pathPreempted, in.ID),
			Kind: interruption.KindPreemption, Action: interruption.ActionDrain}
	}
	return nil
}

func checkEvents(t *testing.T, path, value string, active *interruption.Event, events []interruption.Event) {
	t.Helper()
	notices := 0
	for i, e := range events {
		if e.ID == "" || e.Kind == "" || e.Action == "" || e.Detail == "" {
			t.Fatalf("%s %q: incomplete event %+v", path, value, e)
		}
		if e.Source != "" || !e.Observed.IsZero() || !e.Deadline.IsZero() {
			t.Fatalf("%s %q: the parser set what the source sets: %+v", path, value, e)
		}
		if e.Action == interruption.ActionCancel {
			// Only the active notice is withdrawn, and before anything new.
			if active == nil || e.ID != active.ID || e.Kind != active.Kind || i != 0 {
				t.Fatalf("%s %q: cancel %+v of active %+v at %d", path, value, e, active, i)
			}
			continue
		}
		notices++
		if active != nil && e.ID == active.ID && len(events) > 1 {
			t.Fatalf("%s %q: the active notice both withdrawn and repeated: %+v", path, value, events)
		}
	}
	if notices > 1 {
		t.Fatalf("%s %q: %d notices at once: %+v", path, value, notices, events)
	}
	switch value {
	case preemptedFalse:
		if len(events) != 0 {
			t.Fatalf("%s FALSE: %+v", path, events)
		}
	case preemptedTrue:
		if notices != 1 || events[len(events)-1].Action != interruption.ActionDrain {
			t.Fatalf("%s TRUE: %+v, want a drain", path, events)
		}
	case maintenanceNone:
		if notices != 0 || (active != nil) != (len(events) == 1) {
			t.Fatalf("%s NONE with active %+v: %+v, want the active one withdrawn", path, active, events)
		}
	case maintenanceTerminate, maintenanceMigrate:
		want := interruption.ActionDrain
		if value == maintenanceMigrate {
			want = interruption.ActionNotify
		}
		last := events[len(events)-1]
		if notices != 1 || last.Action != want || last.Kind != interruption.KindHostMaintenance {
			t.Fatalf("%s %s: %+v, want one %s", path, value, events, want)
		}
	}
}
