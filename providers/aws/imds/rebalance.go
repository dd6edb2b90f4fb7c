package imds

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// rebalancePath answers {"noticeTime":"<RFC 3339>"} once EC2 recommends
// moving off a spot instance at elevated risk of interruption, and 404
// before.
const rebalancePath = "events/recommendations/rebalance"

type rebalanceNotice struct {
	NoticeTime string `json:"noticeTime"`
}

// parseRebalance reads a rebalance recommendation: action, no deadline.
func parseRebalance(body []byte, action interruption.Action) ([]interruption.Event, error) {
	var n rebalanceNotice
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, malformed(rebalancePath, body, "not a JSON object: %v", err)
	}
	if n.NoticeTime == "" {
		return nil, malformed(rebalancePath, body, "no noticeTime")
	}
	issued, err := time.Parse(time.RFC3339, n.NoticeTime)
	if err != nil {
		return nil, malformed(rebalancePath, body, "noticeTime %q is not RFC 3339", excerpt(n.NoticeTime))
	}
	return []interruption.Event{{
		ID:     interruption.NewID(interruption.KindRebalance, n.NoticeTime),
		Kind:   interruption.KindRebalance,
		Action: action,
		Issued: issued,
		Detail: fmt.Sprintf("rebalance recommendation at %s", n.NoticeTime),
	}}, nil
}

func pollRebalance(c MetadataGetter, action interruption.Action) interruption.PollFunc {
	return pollPath(c, rebalancePath, func(body []byte) ([]interruption.Event, error) {
		return parseRebalance(body, action)
	})
}
