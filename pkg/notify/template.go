package notify

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultTemplate is the built-in body: a Slack-compatible {"text": ...}
// message. Users copy it to start their own.
//
//go:embed slack.tmpl
var DefaultTemplate string

// LoadTemplate reads and parses the template file, or the built-in
// default when file is empty, and renders a sample notification of each
// phase, so that a template that fails or does not give JSON is reported
// at startup rather than at the first interruption.
func LoadTemplate(file string) (*Template, error) {
	name, text := "slack.tmpl", DefaultTemplate
	if file != "" {
		b, err := readLimited(file, maxTemplateSize)
		if err != nil {
			return nil, err
		}
		name, text = filepath.Base(file), string(b)
	}
	t, err := parseTemplate(name, text)
	if err != nil {
		return nil, err
	}
	for _, m := range samples() {
		if b, err := render(t, m); err != nil {
			return nil, fmt.Errorf("rendering a sample %s notification: %w (output %q)", m.Phase, err, excerpt(b))
		}
	}
	return t, nil
}

// errNotJSON says a template's output is not a JSON document.
var errNotJSON = errors.New("output is not valid JSON")

// render executes t for m and checks that the output is JSON.
func render(t *Template, m Notification) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, m); err != nil {
		return b.Bytes(), err
	}
	if !json.Valid(b.Bytes()) {
		var v any
		err := json.Unmarshal(b.Bytes(), &v) // says where
		return b.Bytes(), fmt.Errorf("%w: %v", errNotJSON, err)
	}
	return b.Bytes(), nil
}

// toJSON encodes v as JSON, HTML characters left as they are.
func toJSON(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
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

// samples are the notifications a template is tried on at load: the
// awkward parts (quotes, newlines, no instance) included.
func samples() []Notification {
	at := time.Date(2026, 1, 2, 12, 32, 58, 0, time.UTC)
	base := Notification{Node: "ip-10-0-0-1.ec2.internal", Instance: "i-0123456789abcdef0", Kind: "spot-interruption",
		Action: "drain", Source: "imds-spot", Detail: "spot \"terminate\" at 12:34:56Z\nsecond line \\ <b>&</b>",
		Deadline: at.Add(118 * time.Second), Time: at, Mode: "agent", Cluster: "prod"}
	received := base
	received.Phase = PhaseReceived
	success := base
	success.Phase, success.Result, success.Evicted, success.Took = PhaseFinished, "success", 14, 1234*time.Millisecond
	timeout := base
	timeout.Phase, timeout.Result, timeout.Remaining, timeout.Took, timeout.Instance = PhaseFinished, "timeout", 3, 2*time.Minute, ""
	return []Notification{received, success, timeout}
}

// excerpt is the start of b, for logs and errors.
func excerpt(b []byte) string {
	const n = 200
	if len(b) > n {
		return strings.ToValidUTF8(string(b[:n]), "") + "..."
	}
	return string(b)
}

// maxTemplateSize bounds a template file: a body template has no reason to
// be large, and the flag may name anything (/dev/zero).
const maxTemplateSize = 1 << 20

func readLimited(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, limit)
	}
	return b, nil
}
