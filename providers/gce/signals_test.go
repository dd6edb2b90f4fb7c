package gce

import (
	"testing"

	"github.com/lastcall/lastcall/pkg/interruption"
)

func TestParse(t *testing.T) {
	in := Instance{Name: "vm", Zone: "z", ID: "42", ProvisioningModel: ProvisioningSpot}
	term := &interruption.Event{ID: interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, "42", maintenanceTerminate), Kind: interruption.KindHostMaintenance, Action: interruption.ActionDrain}
	tests := []struct {
		name    string
		parse   parseFunc
		value   string
		active  *interruption.Event
		actions []interruption.Action
		bad     bool
	}{
		{name: "preempted FALSE", parse: parsePreempted, value: "FALSE"},
		{name: "preempted TRUE", parse: parsePreempted, value: "TRUE", actions: []interruption.Action{interruption.ActionDrain}},
		{name: "preempted lower case", parse: parsePreempted, value: "true", bad: true},
		{name: "preempted empty", parse: parsePreempted, value: "", bad: true},
		{name: "maintenance NONE", parse: parseMaintenance, value: "NONE"},
		{name: "maintenance NONE after TERMINATE", parse: parseMaintenance, value: "NONE", active: term, actions: []interruption.Action{interruption.ActionCancel}},
		{name: "maintenance TERMINATE", parse: parseMaintenance, value: maintenanceTerminate, actions: []interruption.Action{interruption.ActionDrain}},
		{name: "maintenance TERMINATE again", parse: parseMaintenance, value: maintenanceTerminate, active: term, actions: []interruption.Action{interruption.ActionDrain}},
		{name: "maintenance MIGRATE", parse: parseMaintenance, value: maintenanceMigrate, actions: []interruption.Action{interruption.ActionNotify}},
		{name: "maintenance MIGRATE after TERMINATE", parse: parseMaintenance, value: maintenanceMigrate, active: term, actions: []interruption.Action{interruption.ActionCancel, interruption.ActionNotify}},
		{name: "maintenance unknown", parse: parseMaintenance, value: "SOMETHING_NEW", bad: true},
		{name: "maintenance unknown keeps active", parse: parseMaintenance, value: "", active: term, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := tt.parse(tt.value, in, tt.active)
			if (err != nil) != tt.bad {
				t.Fatalf("error %v, want error %v", err, tt.bad)
			}
			if len(events) != len(tt.actions) {
				t.Fatalf("events %+v, want actions %v", events, tt.actions)
			}
			for i, e := range events {
				if e.Action != tt.actions[i] || e.ID == "" || e.Kind == "" || e.Detail == "" {
					t.Errorf("event %d: %+v, want action %s with ID, kind and detail", i, e, tt.actions[i])
				}
				if e.Action == interruption.ActionCancel && e.ID != tt.active.ID {
					t.Errorf("cancel of %s, want %s", e.ID, tt.active.ID)
				}
			}
		})
	}
}
