package imds

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// spotPath answers {"action":"terminate|stop|hibernate","time":"<RFC 3339>"}
// about two minutes before a spot instance is taken away, and 404 before.
const spotPath = "spot/instance-action"

type spotNotice struct {
	Action string `json:"action"`
	Time   string `json:"time"`
}

// parseSpot reads a spot instance-action notice: drain by its time.
func parseSpot(body []byte) ([]interruption.Event, error) {
	var n spotNotice
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, malformed(spotPath, body, "not a JSON object: %v", err)
	}
	switch n.Action {
	case "terminate", "stop", "hibernate":
	case "":
		return nil, malformed(spotPath, body, "no action")
	default:
		return nil, malformed(spotPath, body, "unknown action %q", excerpt(n.Action))
	}
	if n.Time == "" {
		return nil, malformed(spotPath, body, "no time")
	}
	deadline, err := time.Parse(time.RFC3339, n.Time)
	if err != nil {
		return nil, malformed(spotPath, body, "time %q is not RFC 3339", excerpt(n.Time))
	}
	return []interruption.Event{{
		ID:       interruption.NewID(interruption.KindSpotInterruption, n.Action, n.Time),
		Kind:     interruption.KindSpotInterruption,
		Action:   interruption.ActionDrain,
		Deadline: deadline,
		Detail:   fmt.Sprintf("spot instance-action %s at %s", n.Action, n.Time),
	}}, nil
}

func pollSpot(c MetadataGetter) interruption.PollFunc {
	return pollPath(c, spotPath, parseSpot)
}
