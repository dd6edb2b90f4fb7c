package imds

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// maintenancePath answers a JSON array of the instance's scheduled events,
// [] when there are none:
//
//	[{"NotBefore":"21 Jan 2019 09:00:43 GMT","Code":"system-reboot",
//	  "Description":"...","EventId":"instance-event-...",
//	  "NotAfter":"...","State":"active"}]
//
// An event stays listed as completed or canceled after it is over.
const maintenancePath = "events/maintenance/scheduled"

// maintenanceTimeLayout is the format of NotBefore: IMDS and
// amazon-ec2-metadata-mock write "21 Jan 2019 09:00:43 GMT" (the mock does
// not zero-pad the day, which the layout's "2" accepts either way).
// RFC 3339 is accepted too.
const maintenanceTimeLayout = "2 Jan 2006 15:04:05 GMT"

type scheduledEvent struct {
	Code        string `json:"Code"`
	Description string `json:"Description"`
	State       string `json:"State"`
	EventID     string `json:"EventId"`
	NotBefore   string `json:"NotBefore"`
	NotAfter    string `json:"NotAfter"`
}

// parseMaintenance reads the scheduled events: an active one asks to drain
// by its NotBefore, a completed or canceled one cancels what its ID asked.
// One malformed entry makes the whole answer malformed.
func parseMaintenance(body []byte) ([]interruption.Event, error) {
	var list []scheduledEvent
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, malformed(maintenancePath, body, "not a JSON array of events: %v", err)
	}
	events := make([]interruption.Event, 0, len(list))
	for i, se := range list {
		if se.EventID == "" {
			return nil, malformed(maintenancePath, body, "event %d has no EventId", i)
		}
		e := interruption.Event{
			ID:   interruption.NewID(interruption.KindScheduledMaintenance, se.EventID),
			Kind: interruption.KindScheduledMaintenance,
		}
		switch se.State {
		case "active":
			notBefore, err := parseMaintenanceTime(se.NotBefore)
			if err != nil {
				return nil, malformed(maintenancePath, body, "event %s: %v", excerpt(se.EventID), err)
			}
			e.Action, e.Deadline = interruption.ActionDrain, notBefore
			e.Detail = fmt.Sprintf("scheduled maintenance %s (%s) not before %s",
				se.Code, se.EventID, notBefore.Format(time.RFC3339))
		case "completed", "canceled":
			e.Action = interruption.ActionCancel
			e.Detail = fmt.Sprintf("scheduled maintenance %s (%s) %s", se.Code, se.EventID, se.State)
		default:
			return nil, malformed(maintenancePath, body, "event %s has unknown state %q", excerpt(se.EventID), excerpt(se.State))
		}
		events = append(events, e)
	}
	return events, nil
}

func parseMaintenanceTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("no NotBefore")
	}
	for _, layout := range []string{maintenanceTimeLayout, time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("NotBefore %q is neither like %q nor RFC 3339", excerpt(s), maintenanceTimeLayout)
}

func pollMaintenance(c MetadataGetter) interruption.PollFunc {
	return pollPath(c, maintenancePath, parseMaintenance)
}
