package messages

import "fmt"

// testNotificationEvent is the Event of the message Auto Scaling sends a
// lifecycle hook's queue or topic when the hook is created, to check it can:
//
//	{"AccountId": "123456789012", "RequestId": "...",
//	 "AutoScalingGroupARN": "arn:aws:autoscaling:...", "AutoScalingGroupName": "my-asg",
//	 "Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION",
//	 "Time": "2021-04-15T16:40:12.345Z"}
const testNotificationEvent = "autoscaling:TEST_NOTIFICATION"

// parseTestNotification ignores a test notification. Its ID is its
// RequestId, or derived from body when it has none.
func parseTestNotification(m Message, n autoScalingNotification, d lifecycleDetail, body []byte) Message {
	m.Kind = KindASGTestNotification
	m.Verdict = Ignore
	m.Reason = IgnoreTestNotification
	m.ID = n.RequestID
	if m.ID == "" {
		m.ID = contentID(body)
	}
	m.Detail = fmt.Sprintf("Auto Scaling test notification for group %s", excerpt(d.AutoScalingGroupName))
	return m
}
