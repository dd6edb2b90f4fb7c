package messages

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// healthDetail is the detail of an "AWS Health Event" (EventBridge schema
// aws.health@AWSHealthEvent; AWS Health User Guide, "AWS Health events
// Amazon EventBridge schema"). Only its EC2 scheduled changes concern
// lastcall:
//
//	{"eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/...",
//	 "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
//	 "eventTypeCategory": "scheduledChange", "statusCode": "upcoming",
//	 "startTime": "Sat, 05 Jun 2021 15:10:09 GMT",
//	 "affectedEntities": [{"entityValue": "i-1234567890abcdef0"}], ...}
type healthDetail struct {
	EventArn          string         `json:"eventArn"`
	Service           string         `json:"service"`
	EventTypeCode     string         `json:"eventTypeCode"`
	EventTypeCategory string         `json:"eventTypeCategory"`
	StatusCode        string         `json:"statusCode"`
	StartTime         string         `json:"startTime"`
	AffectedEntities  []healthEntity `json:"affectedEntities"`
}

// healthEntity is one resource a Health event affects; for EC2, an instance.
type healthEntity struct {
	EntityValue string `json:"entityValue"`
}

// parseHealth drains the instances of an EC2 scheduled change (a
// retirement, a reboot or network maintenance), by the start of its window.
// Health sends the event again, with the same eventArn, as its status moves
// from upcoming to open to closed: the notices of each instance are keyed
// by the eventArn, so an update joins the notice in force, and a closed (or
// canceled) change withdraws it, releasing the node. Other services and
// categories are ignored, as is a change that names no instance, or that
// closes with no eventArn.
func parseHealth(m Message, raw json.RawMessage) (Message, error) {
	var d healthDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	m.Kind = KindScheduledChange
	m.Verdict = Ignore
	m.Detail = fmt.Sprintf("AWS Health event %s (service %s, category %s, status %s)",
		excerpt(d.EventTypeCode), excerpt(d.Service), excerpt(d.EventTypeCategory), excerpt(d.StatusCode))
	switch {
	case d.Service != "EC2":
		m.Reason = IgnoreNotEC2
		return m, nil
	case d.EventTypeCategory != "scheduledChange":
		m.Reason = IgnoreNotScheduledChange
		return m, nil
	}
	closed := d.StatusCode == "closed" || d.StatusCode == "canceled"
	if closed && d.EventArn == "" {
		m.Reason = IgnoreClosed
		return m, nil
	}
	seen := make(map[string]bool, len(d.AffectedEntities))
	for _, e := range d.AffectedEntities {
		if e.EntityValue != "" && !seen[e.EntityValue] {
			seen[e.EntityValue] = true
			m.InstanceIDs = append(m.InstanceIDs, e.EntityValue)
		}
	}
	if len(m.InstanceIDs) == 0 {
		m.Reason = IgnoreNoInstances
		return m, nil
	}
	m.Key = d.EventArn
	m.Interruption = interruption.KindScheduledMaintenance
	if closed {
		m.Verdict = Release
		m.Withdraws = []string{d.EventArn}
		m.Detail = fmt.Sprintf("scheduled change %s %s for %d instance(s)", excerpt(d.EventTypeCode), d.StatusCode, len(m.InstanceIDs))
		return m, nil
	}
	if d.StartTime != "" {
		t, err := parseHealthTime("detail.startTime", d.StartTime)
		if err != nil {
			return Message{}, err
		}
		m.Deadline = t
	}
	m.Verdict = Drain
	m.Detail = fmt.Sprintf("scheduled change %s for %d instance(s)", d.EventTypeCode, len(m.InstanceIDs))
	if !m.Deadline.IsZero() {
		m.Detail += " from " + m.Deadline.Format(time.RFC3339)
	}
	return m, nil
}

// healthTimeLayout is how Health writes the times of its detail, as HTTP
// does: "Sat, 05 Jun 2021 15:10:09 GMT". "GMT" is literal here, not a zone
// abbreviation, which Go would take for UTC whatever it names.
const healthTimeLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

// parseHealthTime reads a Health detail time, in UTC. A numeric zone
// (RFC 1123Z) and RFC 3339 are accepted too.
func parseHealthTime(field, value string) (time.Time, error) {
	for _, layout := range []string{healthTimeLayout, time.RFC1123Z, time.RFC3339} {
		if t, err := time.Parse(layout, value); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, parseErrorf(ReasonBadTime, "%s %s is not a time like %q", field, excerpt(value), "Sat, 05 Jun 2021 15:10:09 GMT")
}
