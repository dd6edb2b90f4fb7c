package messages

import (
	"encoding/json"
	"fmt"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// The lifecycle transitions of the hooks lastcall serves.
const (
	transitionTerminating = "autoscaling:EC2_INSTANCE_TERMINATING"
	transitionLaunching   = "autoscaling:EC2_INSTANCE_LAUNCHING"
)

// lifecycleDetail identifies an Auto Scaling lifecycle action. It is the
// detail of an EventBridge "EC2 Instance-terminate Lifecycle Action" or
// "EC2 Instance-launch Lifecycle Action" event, and the core of the
// notification Auto Scaling sends a hook's SQS queue or SNS topic itself:
//
//	{"LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
//	 "AutoScalingGroupName": "my-asg", "LifecycleHookName": "my-hook",
//	 "EC2InstanceId": "i-1234567890abcdef0",
//	 "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
//	 "NotificationMetadata": "...", "Origin": "AutoScalingGroup", "Destination": "EC2"}
type lifecycleDetail struct {
	LifecycleActionToken string `json:"LifecycleActionToken"`
	AutoScalingGroupName string `json:"AutoScalingGroupName"`
	LifecycleHookName    string `json:"LifecycleHookName"`
	EC2InstanceID        string `json:"EC2InstanceId"`
	LifecycleTransition  string `json:"LifecycleTransition"`
}

// autoScalingNotification is a message Auto Scaling sends a lifecycle hook's
// queue or topic itself, with no EventBridge envelope: a lifecycle action
// (these fields and the lifecycleDetail ones, side by side:
// {"Service": "AWS Auto Scaling", "Time": "2021-04-15T16:41:59.710Z",
// "AccountId": "...", "RequestId": "...", "LifecycleTransition": ...,
// "EC2InstanceId": ..., ...}), or a test notification when the hook is
// created ({"Event": "autoscaling:TEST_NOTIFICATION", ...}).
type autoScalingNotification struct {
	Service   string `json:"Service"`
	Time      string `json:"Time"`
	AccountID string `json:"AccountId"`
	RequestID string `json:"RequestId"`
	Event     string `json:"Event"`
}

// isAutoScalingNotification tells an Auto Scaling notification by its keys.
func isAutoScalingNotification(obj map[string]json.RawMessage) bool {
	var service string
	_ = json.Unmarshal(obj["Service"], &service)
	return obj["LifecycleTransition"] != nil || obj["Event"] != nil || service == "AWS Auto Scaling"
}

// parseAutoScalingNotification parses a message from Auto Scaling itself.
// Its ID is the lifecycle action token; other notifications (scaling
// activity, other transitions) are of no kind lastcall handles.
func parseAutoScalingNotification(body []byte) (Message, error) {
	var n autoScalingNotification
	var d lifecycleDetail
	if err := decode(body, "", &n); err != nil {
		return Message{}, inContext(err, "Auto Scaling notification")
	}
	if err := decode(body, "", &d); err != nil {
		return Message{}, inContext(err, "Auto Scaling notification")
	}
	m := Message{Account: n.AccountID}
	if n.Time != "" {
		t, err := parseRFC3339("Time", n.Time)
		if err != nil {
			return Message{}, inContext(err, "Auto Scaling notification")
		}
		m.Time = t
	}
	switch {
	case n.Event == testNotificationEvent || d.LifecycleTransition == testNotificationEvent:
		return parseTestNotification(m, n, d, body), nil
	case d.LifecycleTransition == transitionTerminating || d.LifecycleTransition == transitionLaunching:
		context := "Auto Scaling " + d.LifecycleTransition + " notification"
		if n.Time == "" {
			return Message{}, inContext(missing("Time"), context)
		}
		m.ID = d.LifecycleActionToken
		lm, err := lifecycleMessage(m, d, "")
		if err != nil {
			return Message{}, inContext(err, context)
		}
		return lm, nil
	}
	m.ID = n.RequestID
	what := d.LifecycleTransition
	if what == "" {
		what = n.Event
	}
	return unknown(m, body, "Auto Scaling notification "+excerpt(what)), nil
}

// parseASGTerminateEvent drains the instance, then completes the action.
func parseASGTerminateEvent(m Message, raw json.RawMessage) (Message, error) {
	return parseLifecycleEvent(m, raw, transitionTerminating)
}

// parseASGLaunchEvent completes the action once the instance's node is Ready.
func parseASGLaunchEvent(m Message, raw json.RawMessage) (Message, error) {
	return parseLifecycleEvent(m, raw, transitionLaunching)
}

// parseLifecycleEvent reads the detail of a lifecycle action event whose
// detail-type says transition.
func parseLifecycleEvent(m Message, raw json.RawMessage, transition string) (Message, error) {
	var d lifecycleDetail
	if err := decodeDetail(raw, &d); err != nil {
		return Message{}, err
	}
	switch d.LifecycleTransition {
	case "":
		d.LifecycleTransition = transition
	case transition:
	default:
		return Message{}, parseErrorf(ReasonWrongType, "detail.LifecycleTransition %s contradicts the detail-type", excerpt(d.LifecycleTransition))
	}
	return lifecycleMessage(m, d, "detail.")
}

// lifecycleMessage completes m from a lifecycle action whose transition is
// one lastcall serves. prefix is where its fields are, for errors.
func lifecycleMessage(m Message, d lifecycleDetail, prefix string) (Message, error) {
	for _, f := range []struct{ name, value string }{
		{"EC2InstanceId", d.EC2InstanceID},
		{"LifecycleActionToken", d.LifecycleActionToken},
		{"LifecycleHookName", d.LifecycleHookName},
		{"AutoScalingGroupName", d.AutoScalingGroupName},
	} {
		if f.value == "" {
			return Message{}, missing(prefix + f.name)
		}
	}
	if d.LifecycleTransition == transitionTerminating {
		m.Kind = KindASGTerminate
		m.Verdict = Drain
		m.Interruption = interruption.KindASGTermination
		m.Detail = fmt.Sprintf("Auto Scaling group %s is terminating %s (hook %s)", d.AutoScalingGroupName, d.EC2InstanceID, d.LifecycleHookName)
	} else {
		m.Kind = KindASGLaunch
		m.Verdict = CompleteLaunch
		m.Detail = fmt.Sprintf("Auto Scaling group %s is launching %s (hook %s)", d.AutoScalingGroupName, d.EC2InstanceID, d.LifecycleHookName)
	}
	m.InstanceIDs = []string{d.EC2InstanceID}
	m.Lifecycle = &LifecycleAction{
		HookName:   d.LifecycleHookName,
		GroupName:  d.AutoScalingGroupName,
		Token:      d.LifecycleActionToken,
		InstanceID: d.EC2InstanceID,
		Transition: d.LifecycleTransition,
	}
	return m, nil
}
