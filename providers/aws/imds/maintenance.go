package imds

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lastcall/lastcall/pkg/health"
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
// An event in a state IMDS may add one day is left out and returned in
// unknown, and the rest of the answer is used. One malformed entry makes
// the whole answer malformed.
func parseMaintenance(body []byte) (events []interruption.Event, unknown []health.UnknownValue, err error) {
	var list []scheduledEvent
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, nil, malformed(maintenancePath, body, "not a JSON array of events: %v", err)
	}
	events = make([]interruption.Event, 0, len(list))
	for i, se := range list {
		if se.EventID == "" {
			return nil, nil, malformed(maintenancePath, body, "event %d has no EventId", i)
		}
		e := interruption.Event{
			ID:   interruption.NewID(interruption.KindScheduledMaintenance, se.EventID),
			Kind: interruption.KindScheduledMaintenance,
		}
		switch se.State {
		case "active":
			notBefore, err := parseMaintenanceTime(se.NotBefore)
			if err != nil {
				return nil, nil, malformed(maintenancePath, body, "event %s: %v", excerpt(se.EventID), err)
			}
			e.Action, e.Deadline = interruption.ActionDrain, notBefore
			e.Detail = fmt.Sprintf("scheduled maintenance %s (%s) not before %s",
				se.Code, se.EventID, notBefore.Format(time.RFC3339))
		case "completed", "canceled":
			e.Action = interruption.ActionCancel
			e.Detail = fmt.Sprintf("scheduled maintenance %s (%s) %s", se.Code, se.EventID, se.State)
		default:
			unknown = append(unknown, health.UnknownValue{Entry: se.EventID, Field: "State", Value: se.State})
			continue
		}
		events = append(events, e)
	}
	return events, unknown, nil
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

// pollMaintenance reads the scheduled events of source; the states it does
// not know are logged, and counted by reporter if it counts them.
func pollMaintenance(c MetadataGetter, source string, reporter interruption.HealthReporter, log *slog.Logger) interruption.PollFunc {
	unknown := health.NewUnknowns(source, reporter, log)
	return pollPath(c, maintenancePath, func(body []byte) ([]interruption.Event, error) {
		events, values, err := parseMaintenance(body)
		if err == nil {
			unknown.Report(values)
		}
		return events, err
	})
}
