package messages

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// MaxBodySize is the largest body Parse reads: 256 KiB, the size limit of
// an EventBridge event and SQS's classic message size limit. Anything larger
// did not come from AWS.
const MaxBodySize = 256 << 10

// eventKey chooses the parser of an EventBridge event.
type eventKey struct {
	source, detailType string
}

// eventParser turns an event's detail into a Message. m arrives with ID,
// Time, Account and Region filled from the event; the parser sets the rest.
type eventParser func(m Message, detail json.RawMessage) (Message, error)

// eventParsers is the table of the EventBridge events lastcall handles. An
// event not in it becomes a KindUnknown Message with an Ignore verdict.
var eventParsers = map[eventKey]eventParser{
	{"aws.ec2", "EC2 Spot Instance Interruption Warning"}:                 parseSpot,
	{"aws.ec2", "EC2 Instance Rebalance Recommendation"}:                  parseRebalance,
	{"aws.ec2", "EC2 Instance State-change Notification"}:                 parseStateChange,
	{"aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"}: parseCapacityReservation,
	{"aws.health", "AWS Health Event"}:                                    parseHealth,
	{"aws.autoscaling", "EC2 Instance-terminate Lifecycle Action"}:        parseASGTerminateEvent,
	{"aws.autoscaling", "EC2 Instance-launch Lifecycle Action"}:           parseASGLaunchEvent,
}

// event is the envelope of every EventBridge event:
//
//	{"version": "0", "id": "...", "detail-type": "...", "source": "aws.ec2",
//	 "account": "123456789012", "time": "2021-02-03T14:05:06Z",
//	 "region": "us-east-1", "resources": [...], "detail": {...}}
//
// "resources" is not read: AWS's own examples do not agree on its type.
type event struct {
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Detail     json.RawMessage `json:"detail"`
}

// Parse reads one SQS message body: an EventBridge event, or a notification
// Auto Scaling sends a lifecycle hook's queue itself, either of them bare or
// wrapped in an SNS notification. A message of a kind lastcall does not
// handle is not an error: it is a KindUnknown Message with an Ignore
// verdict. The error, when there is one, is a *ParseError.
func Parse(body []byte) (Message, error) {
	if len(body) > MaxBodySize {
		return Message{}, parseErrorf(ReasonTooLarge, "the body is %d bytes, more than the %d allowed", len(body), MaxBodySize)
	}
	obj, err := decodeObject(body, "")
	if err != nil {
		return Message{}, err
	}
	inner, wrapped, err := snsMessage(obj)
	if err != nil {
		return Message{}, inContext(err, "SNS notification")
	}
	if wrapped {
		m, err := parseBare(inner)
		if err != nil {
			return Message{}, inContext(err, "SNS notification Message")
		}
		return m, nil
	}
	return classify(body, obj)
}

// parseBare parses the Message of an SNS notification.
func parseBare(body []byte) (Message, error) {
	obj, err := decodeObject(body, "")
	if err != nil {
		return Message{}, err
	}
	return classify(body, obj)
}

// classify parses body, decoded as obj and out of any SNS envelope, by its
// shape.
func classify(body []byte, obj map[string]json.RawMessage) (Message, error) {
	switch {
	case obj["detail-type"] != nil:
		return parseEvent(body)
	case isAutoScalingNotification(obj):
		return parseAutoScalingNotification(body)
	}
	return unknown(Message{}, body, "neither an EventBridge event nor an Auto Scaling notification"), nil
}

// snsMessage returns the Message of an SNS notification, and whether obj is
// one: {"Type": "Notification", "MessageId": "...", "TopicArn": "...",
// "Message": "<the JSON published, as a string>", "Timestamp": "...", ...}.
func snsMessage(obj map[string]json.RawMessage) (inner []byte, ok bool, err error) {
	var typ string
	if json.Unmarshal(obj["Type"], &typ) != nil || typ != "Notification" {
		return nil, false, nil
	}
	raw, present := obj["Message"]
	if !present || string(raw) == "null" {
		return nil, true, missing("Message")
	}
	var msg string
	if err := decode(raw, "Message", &msg); err != nil {
		return nil, true, err
	}
	if msg == "" {
		return nil, true, missing("Message")
	}
	return []byte(msg), true, nil
}

// parseEvent parses an EventBridge event with the parser its source and
// detail-type choose.
func parseEvent(body []byte) (Message, error) {
	var e event
	if err := decode(body, "", &e); err != nil {
		return Message{}, inContext(err, "EventBridge event")
	}
	m := Message{ID: e.ID, Account: e.Account, Region: e.Region}
	if e.Time != "" {
		t, err := parseRFC3339("time", e.Time)
		if err != nil {
			return Message{}, inContext(err, "EventBridge event")
		}
		m.Time = t
	}
	parse, ok := eventParsers[eventKey{e.Source, e.DetailType}]
	if !ok {
		return unknown(m, body, fmt.Sprintf("EventBridge event %s from %s", excerpt(e.DetailType), excerpt(e.Source))), nil
	}
	context := fmt.Sprintf("EventBridge %q event", e.DetailType)
	switch {
	case e.ID == "":
		return Message{}, inContext(missing("id"), context)
	case e.Time == "":
		return Message{}, inContext(missing("time"), context)
	}
	m, err := parse(m, e.Detail)
	if err != nil {
		return Message{}, inContext(err, fmt.Sprintf("%s %s", context, e.ID))
	}
	return m, nil
}

// unknown is the no-op fallback: a message of a kind lastcall does not
// handle, to be deleted. m may carry the ID, Time, Account and Region the
// message has; with no ID, one is derived from the body.
func unknown(m Message, body []byte, what string) Message {
	m.Kind = KindUnknown
	m.Verdict = Ignore
	m.Reason = IgnoreUnknownKind
	if m.ID == "" {
		m.ID = contentID(body)
	}
	m.Detail = "ignored: " + what
	return m
}

// contentID derives an ID from a message that has none of its own, so that
// a redelivery has the same ID.
func contentID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256-" + hex.EncodeToString(sum[:16])
}

// parseRFC3339 reads the time in field, as EventBridge and Auto Scaling
// write it ("2021-02-03T14:05:06Z", "2021-04-15T16:41:59.710Z"), in UTC.
func parseRFC3339(field, value string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return time.Time{}, parseErrorf(ReasonBadTime, "%s %s is not an RFC 3339 time", field, excerpt(value))
	}
	return t.UTC(), nil
}
