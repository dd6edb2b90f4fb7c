package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The built-in payloads, by --webhook-format.
var formats = map[string]func(Notification) ([]byte, error){
	FormatSlack: slack,
	FormatTeams: teams,
	FormatJSON:  func(m Notification) ([]byte, error) { return marshal(m) },
}

// MarshalJSON encodes m with its json tags, times in RFC 3339 (UTC), the
// deadline null when unknown and Took in seconds, plus its Key and a
// one-line summary.
func (m Notification) MarshalJSON() ([]byte, error) {
	type fields Notification // without this method
	var deadline *time.Time
	if !m.Deadline.IsZero() {
		d := m.Deadline.UTC()
		deadline = &d
	}
	return marshal(struct {
		fields
		Deadline *time.Time `json:"deadline"`
		Time     time.Time  `json:"time"`
		Took     float64    `json:"took_seconds"`
		Key      string     `json:"key"`
		Summary  string     `json:"summary"`
	}{fields(m), deadline, m.Time.UTC(), m.Took.Seconds(), m.Key(), summary(m)})
}

// field is one of a notification's JSON fields, its value as text: a
// string's content, a number's or a boolean's literal, "" for null.
type field struct{ name, text string }

// fieldsOf returns m's JSON fields, in order.
func fieldsOf(m Notification) ([]field, error) {
	var obj []field
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		var s string
		if json.Unmarshal(v, &s) != nil { // not a string, nor null
			s = string(v)
		}
		obj = append(obj, field{k.(string), s})
	}
	return obj, nil
}

// summary tells m in one line, for people.
func summary(m Notification) string {
	where := "node " + m.Node
	if m.Instance != "" {
		where += " (" + m.Instance + ")"
	}
	if m.Cluster != "" {
		where += " in cluster " + m.Cluster
	}
	switch {
	case m.Phase == PhaseReceived:
		s := m.Kind + " on " + where + ": cordoned"
		if m.Action == "drain" {
			s = m.Kind + " on " + where + ": drain started"
		}
		if m.Deadline.IsZero() {
			return s
		}
		s += ", deadline " + m.Deadline.UTC().Format("15:04:05Z")
		if !m.Deadline.After(m.Time) {
			return s + " (passed)"
		}
		return s + " (in " + roundDuration(m.Deadline.Sub(m.Time)).String() + ")"
	case m.Result == "success":
		return fmt.Sprintf("%s drained in %s: %s evicted", where, roundDuration(m.Took), pods(m.Evicted))
	case m.Result == "dry_run":
		return "dry run: " + where + " would have been drained for " + m.Kind
	default:
		return fmt.Sprintf("drain of %s ended (%s) with %s left", where, m.Result, pods(m.Remaining))
	}
}

func pods(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}

// mood is how m looks: a Slack emoji and an Adaptive Card text colour.
func mood(m Notification) (emoji, color string) {
	switch {
	case m.Phase == PhaseReceived:
		return ":warning:", "Warning"
	case m.Result == "success":
		return ":white_check_mark:", "Good"
	case m.Result == "dry_run":
		return ":information_source:", "Accent"
	default:
		return ":x:", "Attention"
	}
}

// slack is a Slack incoming-webhook message, {"text": ...}, which
// Mattermost, Rocket.Chat and Discord's /slack endpoint take too.
func slack(m Notification) ([]byte, error) {
	emoji, _ := mood(m)
	text := emoji + " " + summary(m)
	if m.Phase == PhaseReceived && m.Detail != "" {
		text += "\n> " + m.Detail
	}
	return marshal(map[string]string{"text": text})
}

// teams is a message with an Adaptive Card, as Microsoft Teams' incoming
// webhooks and Workflows ("when a Teams webhook request is received")
// take: the summary, then every field that is set.
func teams(m Notification) ([]byte, error) {
	fields, err := fieldsOf(m)
	if err != nil {
		return nil, err
	}
	type obj = map[string]any
	var facts []obj
	for _, f := range fields {
		if f.text != "" && f.text != "0" && f.name != "summary" && f.name != "key" {
			facts = append(facts, obj{"title": f.name, "value": f.text})
		}
	}
	_, color := mood(m)
	return marshal(obj{"type": "message", "attachments": []obj{{
		"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": nil,
		"content": obj{"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
			"body": []obj{
				{"type": "TextBlock", "text": summary(m), "weight": "Bolder", "color": color, "wrap": true},
				{"type": "FactSet", "facts": facts},
			}},
	}}})
}

// marshal encodes v as JSON, HTML characters left as they are.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// roundDuration rounds d for reading: 1m58s, 1.2s, 340ms.
func roundDuration(d time.Duration) time.Duration {
	switch a := d.Abs(); {
	case a >= time.Minute:
		return d.Round(time.Second)
	case a >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// excerpt is the start of b, for logs and errors.
func excerpt(b []byte) string {
	const n = 200
	if len(b) > n {
		return strings.ToValidUTF8(string(b[:n]), "") + "..."
	}
	return string(b)
}
