package azure

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/interruption"
)

// document is the answer to a GET of the scheduled events endpoint.
// Pointers tell a missing key from a zero value.
type document struct {
	DocumentIncarnation *int         `json:"DocumentIncarnation"`
	Events              *[]wireEvent `json:"Events"`
}

// wireEvent is one entry of document.Events. Keys Azure may add are
// ignored.
type wireEvent struct {
	EventID           string   `json:"EventId"`
	EventType         string   `json:"EventType"`
	ResourceType      string   `json:"ResourceType"`
	Resources         []string `json:"Resources"`
	EventStatus       string   `json:"EventStatus"`
	NotBefore         string   `json:"NotBefore"`
	Description       string   `json:"Description"`
	EventSource       string   `json:"EventSource"`
	DurationInSeconds int      `json:"DurationInSeconds"`
}

// The EventStatus values Azure documents. A finished event is no longer
// listed; there is no status for it.
const (
	statusScheduled = "Scheduled"
	statusStarted   = "Started"
)

// notice is one listed event for this VM: what lastcall makes of it, and
// what Acknowledge needs to approve it.
type notice struct {
	event   interruption.Event
	eventID string // Azure's EventId
	// started: not to be approved, as Azure has started it (or it is in a
	// status lastcall does not know, which it does not approve either).
	started   bool
	resources []string
}

// kindOf maps an EventType to a kind and an action; ok is false for a type
// Azure does not document.
func kindOf(eventType string, drainFreeze bool) (kind interruption.Kind, action interruption.Action, ok bool) {
	switch eventType {
	case "Preempt":
		return interruption.KindPreemption, interruption.ActionDrain, true
	case "Terminate":
		return interruption.KindTermination, interruption.ActionDrain, true
	case "Reboot", "Redeploy":
		return interruption.KindHostMaintenance, interruption.ActionDrain, true
	case "Freeze":
		if drainFreeze {
			return interruption.KindHostMaintenance, interruption.ActionDrain, true
		}
		return interruption.KindHostMaintenance, interruption.ActionNotify, true
	}
	return "", "", false
}

// parseDocument reads a scheduled events document and returns the events
// for vmName (every event when it is empty), in the document's order. An
// event without NotBefore (Started, or already due) has the deadline now.
//
// A value Azure may add one day is returned in unknown, for this VM's
// events, and the rest of the document is used: an event of an unknown
// EventType is left out (what it asks for is unknown); one of a known type
// in an unknown EventStatus is taken as in force, as its type asks, and is
// never approved. One malformed entry, for this VM or not, makes the whole
// answer malformed: a document that is wrong in part cannot be trusted to
// be right elsewhere.
func parseDocument(body []byte, vmName string, drainFreeze bool, now time.Time) (notices []notice, unknown []health.UnknownValue, err error) {
	var doc document
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, malformed(body, "not a scheduled events document: %v", err)
	}
	if doc.DocumentIncarnation == nil {
		return nil, nil, malformed(body, "no DocumentIncarnation")
	}
	if doc.Events == nil {
		return nil, nil, malformed(body, "no Events list")
	}
	notices = make([]notice, 0, len(*doc.Events))
	seen := map[string]bool{}
	for i, we := range *doc.Events {
		if we.EventID == "" {
			return nil, nil, malformed(body, "event %d has no EventId", i)
		}
		if seen[we.EventID] {
			return nil, nil, malformed(body, "EventId %q listed twice", excerpt(we.EventID))
		}
		seen[we.EventID] = true
		deadline := now
		if we.NotBefore != "" {
			t, err := time.Parse(http.TimeFormat, we.NotBefore)
			if err != nil {
				return nil, nil, malformed(body, "event %s: NotBefore %q is not like %q", excerpt(we.EventID), excerpt(we.NotBefore), http.TimeFormat)
			}
			deadline = t.UTC()
		}
		if vmName != "" && !slices.ContainsFunc(we.Resources, func(r string) bool { return strings.EqualFold(r, vmName) }) {
			continue
		}
		kind, action, ok := kindOf(we.EventType, drainFreeze)
		if !ok {
			unknown = append(unknown, health.UnknownValue{Entry: we.EventID, Field: "EventType", Value: we.EventType})
			continue
		}
		var started bool
		switch we.EventStatus {
		case statusScheduled:
		case statusStarted:
			started = true
		default:
			unknown = append(unknown, health.UnknownValue{Entry: we.EventID, Field: "EventStatus", Value: we.EventStatus})
			started = true
		}
		notices = append(notices, notice{
			event: interruption.Event{
				ID:       interruption.NewID(kind, we.EventID),
				Kind:     kind,
				Action:   action,
				Deadline: deadline,
				Detail:   detail(we),
			},
			eventID:   we.EventID,
			started:   started,
			resources: slices.Clone(we.Resources),
		})
	}
	return notices, unknown, nil
}

// newUnknowns reports the values of the document lastcall does not know:
// logged, and counted by reporter if it counts them.
func newUnknowns(reporter interruption.HealthReporter, log *slog.Logger) *health.Unknowns {
	return health.NewUnknowns(SourceName, reporter, log)
}

// detail describes an event for Events and logs.
func detail(we wireEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "azure scheduled event %s %s (%s", we.EventType, we.EventID, we.EventStatus)
	if we.NotBefore != "" {
		fmt.Fprintf(&b, ", not before %s", we.NotBefore)
	}
	if we.DurationInSeconds > 0 {
		fmt.Fprintf(&b, ", lasting %ds", we.DurationInSeconds)
	}
	if we.EventSource != "" {
		fmt.Fprintf(&b, ", from %s", we.EventSource)
	}
	b.WriteString(")")
	if we.Description != "" {
		fmt.Fprintf(&b, ": %s", excerpt(we.Description))
	}
	return b.String()
}

// malformed is the error for an answer that cannot be understood. Values
// quoted from the body in format's arguments should go through excerpt.
func malformed(body []byte, format string, args ...any) error {
	return interruption.Malformed(fmt.Errorf("%s: %s (body %q)", eventsPath, fmt.Sprintf(format, args...), excerpt(string(body))))
}
