package messages

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// InterruptionCapacityReservation is the interruption kind (and taint) of an
// instance whose interruptible Capacity Reservation is reclaimed by its
// owner.
const InterruptionCapacityReservation interruption.Kind = "capacity-reservation-interruption"

// capacityDetail is the detail of an "EC2 Capacity Reservation Instance
// Interruption Warning" event, sent two minutes before EC2 terminates an
// instance in an interruptible Capacity Reservation (EC2 User Guide,
// "Monitor interruptible Capacity Reservations"):
//
//	{"instance-id": "i-1234567890abcdef0", "instance-action": "terminate",
//	 "instance-termination-time": "2025-11-20T10:02:00Z", "azId": "use1-az1"}
type capacityDetail struct {
	InstanceID      string `json:"instance-id"`
	InstanceAction  string `json:"instance-action"`
	TerminationTime string `json:"instance-termination-time"`
}

// parseCapacityReservation drains the instance by its termination time, or
// by the event's time plus two minutes when the detail does not say.
func parseCapacityReservation(m Message, raw json.RawMessage) (Message, error) {
	var d capacityDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	if d.InstanceID == "" {
		return Message{}, missing("detail.instance-id")
	}
	m.Deadline = m.Time.Add(warningLead)
	if d.TerminationTime != "" {
		t, err := parseRFC3339("detail.instance-termination-time", d.TerminationTime)
		if err != nil {
			return Message{}, err
		}
		m.Deadline = t
	}
	m.Kind = KindCapacityReservation
	m.Verdict = Drain
	m.Interruption = InterruptionCapacityReservation
	m.InstanceIDs = []string{d.InstanceID}
	m.Detail = fmt.Sprintf("capacity reservation interruption warning: %s of %s by %s",
		actionOr(d.InstanceAction, "terminate"), d.InstanceID, m.Deadline.Format(time.RFC3339))
	return m, nil
}
