package gce

import (
	"fmt"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// Values of instance/preempted.
const (
	preemptedTrue  = "TRUE"
	preemptedFalse = "FALSE"
)

// Values of instance/maintenance-event.
const (
	maintenanceNone      = "NONE"
	maintenanceMigrate   = "MIGRATE_ON_HOST_MAINTENANCE"
	maintenanceTerminate = "TERMINATE_ON_HOST_MAINTENANCE"
)

// maxExcerpt bounds how much of a bad value goes into an error.
const maxExcerpt = 64

// parsePreempted reads instance/preempted: TRUE drains, FALSE says nothing.
// The VM stops soon after TRUE, so there is nothing to cancel.
func parsePreempted(value string, in Instance, _ *interruption.Event) ([]interruption.Event, error) {
	switch value {
	case preemptedFalse:
		return nil, nil
	case preemptedTrue:
		return []interruption.Event{{
			ID:     interruption.NewID(interruption.KindPreemption, pathPreempted, in.ID),
			Kind:   interruption.KindPreemption,
			Action: interruption.ActionDrain,
			Detail: fmt.Sprintf("GCE %s %s in %s preempted", in.Kind(), in.Name, in.Zone),
		}}, nil
	default:
		return nil, fmt.Errorf("%s is %q, want TRUE or FALSE", pathPreempted, excerpt(value))
	}
}

// parseMaintenance reads instance/maintenance-event: TERMINATE drains,
// MIGRATE notifies, and NONE (or another notice) cancels the active one.
func parseMaintenance(value string, in Instance, active *interruption.Event) ([]interruption.Event, error) {
	var ev interruption.Event
	switch value {
	case maintenanceNone:
		if active == nil {
			return nil, nil
		}
		return []interruption.Event{cancelOf(*active, fmt.Sprintf("GCE %s %s in %s: host maintenance over", in.Kind(), in.Name, in.Zone))}, nil
	case maintenanceTerminate:
		ev = interruption.Event{
			Action: interruption.ActionDrain,
			Detail: fmt.Sprintf("GCE %s %s in %s: host maintenance will stop it (%s)", in.Kind(), in.Name, in.Zone, value),
		}
	case maintenanceMigrate:
		ev = interruption.Event{
			Action: interruption.ActionNotify,
			Detail: fmt.Sprintf("GCE %s %s in %s: host maintenance will live-migrate it (%s)", in.Kind(), in.Name, in.Zone, value),
		}
	default:
		return nil, fmt.Errorf("%s is %q, want NONE, %s or %s", pathMaintenance, excerpt(value), maintenanceMigrate, maintenanceTerminate)
	}
	ev.Kind = interruption.KindHostMaintenance
	ev.ID = interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, in.ID, value)
	var events []interruption.Event
	if active != nil && active.ID != ev.ID {
		// The notice changed (a migration became a stop, or the reverse):
		// the old one no longer holds.
		events = append(events, cancelOf(*active, fmt.Sprintf("GCE %s %s in %s: host maintenance notice replaced by %s", in.Kind(), in.Name, in.Zone, value)))
	}
	return append(events, ev), nil
}

// cancelOf withdraws ev.
func cancelOf(ev interruption.Event, detail string) interruption.Event {
	return interruption.Event{ID: ev.ID, Kind: ev.Kind, Action: interruption.ActionCancel, Detail: detail}
}

func excerpt(s string) string {
	if len(s) > maxExcerpt {
		return s[:maxExcerpt] + "..."
	}
	return s
}
