// Package messages parses what arrives on lastcall's SQS queue: EventBridge
// events (spot interruption warnings, rebalance recommendations, AWS Health
// scheduled changes, instance state changes, capacity reservation
// interruption warnings, ASG lifecycle actions) and Auto Scaling's direct
// lifecycle notifications, bare or wrapped by SNS. Each kind has a small
// file of its own; Parse chooses among them from a table keyed by (source,
// detail-type).
package messages

import (
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// Verdict is what the queue processor does with a message.
type Verdict string

const (
	// Drain: cordon and drain the instances' nodes, then complete the
	// lifecycle action if there is one.
	Drain Verdict = "drain"
	// Cordon: cordon the nodes only (a rebalance recommendation).
	Cordon Verdict = "cordon"
	// CompleteLaunch: complete the launch lifecycle action once the
	// instance's node has joined and is Ready.
	CompleteLaunch Verdict = "complete-launch"
	// Release: withdraw the notices earlier messages gave the instances,
	// those of Interruption and of the keys in Withdraws, releasing the
	// queue processor's holds (a scheduled change closed or canceled, an
	// instance running again after it stopped).
	Release Verdict = "release"
	// Ignore: nothing to do (an instance state change to "pending", a
	// Health event for another service, a kind lastcall does not handle);
	// the message is deleted with Reason.
	Ignore Verdict = "ignore"
)

// The reasons for an Ignore verdict, a bounded set used as a metric label.
const (
	// IgnoreTestNotification: the test notification Auto Scaling sends
	// when a lifecycle hook is created.
	IgnoreTestNotification = "test-notification"
	// IgnoreNotEC2: a Health event for another service than EC2.
	IgnoreNotEC2 = "not-ec2"
	// IgnoreNotScheduledChange: an EC2 Health event that is not a
	// scheduled change (an issue, an account notification).
	IgnoreNotScheduledChange = "not-scheduled-change"
	// IgnoreClosed: an EC2 scheduled change whose status is closed or
	// canceled, with no eventArn to tell which notices it ends.
	IgnoreClosed = "closed"
	// IgnoreNoInstances: an EC2 scheduled change that names no instance.
	IgnoreNoInstances = "no-instances"
	// IgnoreStateRunning: an instance state change to pending (running
	// releases the node).
	IgnoreStateRunning = "state-running"
	// IgnoreUnknownState: an instance state change to a state EC2 does not
	// document.
	IgnoreUnknownState = "unknown-state"
	// IgnoreUnknownKind: a message of a kind lastcall does not handle.
	IgnoreUnknownKind = "unknown-kind"
)

// The kinds of message, a bounded set used as a metric label.
const (
	KindSpotInterruption    = "spot-interruption"
	KindRebalance           = "rebalance-recommendation"
	KindScheduledChange     = "scheduled-change"
	KindStateChange         = "instance-state-change"
	KindCapacityReservation = "capacity-reservation-interruption"
	KindASGTerminate        = "asg-terminate"
	KindASGLaunch           = "asg-launch"
	KindASGTestNotification = "asg-test-notification"
	KindUnknown             = "unknown"
)

// Message is one parsed queue message.
type Message struct {
	// Kind is one of the Kind constants.
	Kind string
	// Gone says the instances no longer run and never will again (an
	// instance state change to terminated).
	Gone bool
	// Verdict says what to do.
	Verdict Verdict
	// Reason explains an Ignore verdict, as one of the Ignore constants;
	// empty for other verdicts.
	Reason string
	// Interruption is the interruption kind for Drain, Cordon and Release
	// verdicts (the taint key on the node).
	Interruption interruption.Kind
	// InstanceIDs are the EC2 instances concerned (a Health event may name
	// several).
	InstanceIDs []string
	// Account and Region are the event's, when it says.
	Account, Region string
	// Time is when the event happened (EventBridge "time", the lifecycle
	// notification's "Time"), for queue lag.
	Time time.Time
	// Deadline is when the instance goes, if the message says (spot: the
	// event's time plus the two minutes of warning, since the event has no
	// instance-action time; capacity reservation: its
	// instance-termination-time, else the same two minutes; Health: the
	// start of the change window); zero otherwise.
	Deadline time.Time
	// ID is derived from the message's content (EventBridge "id", the
	// lifecycle action token of a notification from Auto Scaling, the
	// RequestId of a test notification, else a hash of the body), so a
	// redelivered message has the same ID. It is never empty.
	ID string
	// Key, when set, stands for ID in the IDs of the message's notices
	// (interruption.NewID(Interruption, Key, instance)), so that a later
	// message can withdraw them: an AWS Health event's eventArn, which
	// every update of the event carries; the state of an instance state
	// change.
	Key string `json:",omitempty"`
	// Withdraws are the Keys whose notices a Release verdict withdraws.
	Withdraws []string `json:",omitempty"`
	// Lifecycle is set for Auto Scaling lifecycle actions.
	Lifecycle *LifecycleAction
	// Detail is a short human description for Events and logs.
	Detail string
}

// LifecycleAction identifies an Auto Scaling lifecycle action to heartbeat
// and complete.
type LifecycleAction struct {
	HookName   string
	GroupName  string
	Token      string
	InstanceID string
	// Transition is autoscaling:EC2_INSTANCE_TERMINATING or
	// autoscaling:EC2_INSTANCE_LAUNCHING.
	Transition string
}
