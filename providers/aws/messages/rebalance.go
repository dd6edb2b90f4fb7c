package messages

import (
	"encoding/json"
	"fmt"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// rebalanceDetail is the detail of an "EC2 Instance Rebalance
// Recommendation" event (EventBridge schema
// aws.ec2@EC2InstanceRebalanceRecommendation):
//
//	{"instance-id": "i-1234567890abcdef0"}
type rebalanceDetail struct {
	InstanceID string `json:"instance-id"`
}

// parseRebalance cordons the instance's node: a spot instance at elevated
// risk of interruption, with no deadline yet.
func parseRebalance(m Message, raw json.RawMessage) (Message, error) {
	var d rebalanceDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	if d.InstanceID == "" {
		return Message{}, missing("detail.instance-id")
	}
	m.Kind = KindRebalance
	m.Verdict = Cordon
	m.Interruption = interruption.KindRebalance
	m.InstanceIDs = []string{d.InstanceID}
	m.Detail = fmt.Sprintf("rebalance recommendation for %s", d.InstanceID)
	return m, nil
}
