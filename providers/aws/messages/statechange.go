package messages

import (
	"encoding/json"
	"fmt"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// InterruptionStateChange is the interruption kind (and taint) of an
// instance that is stopping or terminating outside lastcall's other signals
// (a user, an API call, a failed health check).
const InterruptionStateChange interruption.Kind = "instance-state-change"

// stateChangeDetail is the detail of an "EC2 Instance State-change
// Notification" event (EventBridge schema
// aws.ec2@EC2InstanceStateChangeNotification):
//
//	{"instance-id": "i-1234567890abcdef0", "state": "shutting-down"}
//
// state is pending, running, stopping, stopped, shutting-down or terminated.
type stateChangeDetail struct {
	InstanceID string `json:"instance-id"`
	State      string `json:"state"`
}

// stopStates are the states of an instance that runs again after them:
// running withdraws their notices. shutting-down and terminated are never
// followed by running, so a running event late from before them withdraws
// nothing.
var stopStates = []string{"stopping", "stopped"}

// parseStateChange drains the instance when it is stopping or going away.
// The event says when the state changed, not when the instance goes (it is
// going already), so there is no Deadline. The notices are keyed by the
// state, so that the instance running again withdraws those of its stop
// (stopping, stopped), releasing the node; pending is ignored, as the
// instance may yet fail to run.
func parseStateChange(m Message, raw json.RawMessage) (Message, error) {
	var d stateChangeDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	switch {
	case d.InstanceID == "":
		return Message{}, missing("detail.instance-id")
	case d.State == "":
		return Message{}, missing("detail.state")
	}
	m.Kind = KindStateChange
	m.InstanceIDs = []string{d.InstanceID}
	m.Detail = fmt.Sprintf("instance %s is %s", d.InstanceID, d.State)
	switch d.State {
	case "stopping", "stopped", "shutting-down", "terminated":
		m.Verdict = Drain
		m.Interruption = InterruptionStateChange
		m.Key = d.State
		m.Gone = d.State == "terminated"
	case "running":
		m.Verdict = Release
		m.Interruption = InterruptionStateChange
		m.Withdraws = stopStates
	case "pending":
		m.Verdict = Ignore
		m.Reason = IgnoreStateRunning
	default:
		m.Verdict = Ignore
		m.Reason = IgnoreUnknownState
		m.Detail = fmt.Sprintf("instance %s is in unknown state %s", d.InstanceID, excerpt(d.State))
	}
	return m, nil
}
