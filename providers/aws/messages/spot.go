package messages

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// warningLead is how long before EC2 takes an instance away it sends a spot
// or capacity reservation interruption warning.
const warningLead = 2 * time.Minute

// spotDetail is the detail of an "EC2 Spot Instance Interruption Warning"
// event (EventBridge schema aws.ec2@EC2SpotInstanceInterruptionWarning):
//
//	{"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}
//
// instance-action is terminate, stop or hibernate. Unlike the IMDS notice,
// the event carries no time of its own.
type spotDetail struct {
	InstanceID     string `json:"instance-id"`
	InstanceAction string `json:"instance-action"`
}

// parseSpot drains the instance by the event's time plus the two minutes of
// warning EC2 gives.
func parseSpot(m Message, raw json.RawMessage) (Message, error) {
	var d spotDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	if d.InstanceID == "" {
		return Message{}, missing("detail.instance-id")
	}
	m.Kind = KindSpotInterruption
	m.Verdict = Drain
	m.Interruption = interruption.KindSpotInterruption
	m.InstanceIDs = []string{d.InstanceID}
	m.Deadline = m.Time.Add(warningLead)
	m.Detail = fmt.Sprintf("spot interruption warning: %s of %s by %s",
		actionOr(d.InstanceAction, "terminate"), d.InstanceID, m.Deadline.Format(time.RFC3339))
	return m, nil
}

// actionOr is the instance-action of a warning, or def when it has none.
func actionOr(action, def string) string {
	if action == "" {
		return def
	}
	return action
}
