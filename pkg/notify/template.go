package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Template is a webhook body of the user's: a JSON document whose strings
// may hold ${field} placeholders, field being a key of the notification's
// JSON form (phase, node, instance, ..., key, summary). Render puts each
// field's text in its place, escaped for a JSON string, so the output is
// JSON whatever the values. JSON has "$" only inside strings, so the
// placeholders are found in the raw text; "\u0024{" is a literal "${".
type Template struct {
	text  []string // around the placeholders: len(names)+1
	names []string
}

// ParseTemplate parses src, refusing one that is not JSON or names a
// field a Notification does not have.
func ParseTemplate(src string) (*Template, error) {
	if err := checkJSON(src); err != nil {
		if strings.Contains(src, "{{") {
			err = fmt.Errorf("%w (Go templates are no longer taken: write JSON with ${field} placeholders)", err)
		}
		return nil, err
	}
	fields, err := fieldsOf(Notification{})
	if err != nil {
		return nil, err
	}
	known, names := map[string]bool{}, make([]string, len(fields))
	for i, f := range fields {
		known[f.name], names[i] = true, f.name
	}
	t, rest := &Template{}, src
	for {
		before, after, ok := strings.Cut(rest, "${")
		if !ok {
			t.text = append(t.text, rest)
			return t, nil
		}
		at := len(src) - len(rest) + len(before)
		end := strings.IndexAny(after, `}"`)
		if end < 0 || after[end] != '}' {
			return nil, fmt.Errorf("%s: a placeholder not closed by }", position(src, at))
		}
		if name := after[:end]; !known[name] {
			return nil, fmt.Errorf("%s: unknown placeholder ${%s}; the fields are %s", position(src, at), name, strings.Join(names, ", "))
		}
		t.text, t.names, rest = append(t.text, before), append(t.names, after[:end]), after[end+1:]
	}
}

// Render is t with m's fields in place of its placeholders.
func (t *Template) Render(m Notification) ([]byte, error) {
	fields, err := fieldsOf(m)
	if err != nil {
		return nil, err
	}
	text := map[string]string{}
	for _, f := range fields {
		text[f.name] = f.text
	}
	var b strings.Builder
	for i, name := range t.names {
		q, _ := marshal(text[name]) // a string always encodes
		b.WriteString(t.text[i])
		b.Write(q[1 : len(q)-1])
	}
	b.WriteString(t.text[len(t.names)])
	return []byte(b.String()), checkJSON(b.String())
}

// errNotJSON says a template or its output is not a JSON document.
var errNotJSON = errors.New("not valid JSON")

// checkJSON says where src stops being JSON.
func checkJSON(src string) error {
	var v any
	err := json.Unmarshal([]byte(src), &v)
	if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
		return fmt.Errorf("%s: %w: %v", position(src, int(se.Offset)-1), errNotJSON, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errNotJSON, err)
	}
	return nil
}

// position is the line and column of the byte at offset in src.
func position(src string, offset int) string {
	before := src[:min(max(offset, 0), len(src))]
	line := strings.Count(before, "\n") + 1
	return fmt.Sprintf("line %d, column %d", line, len(before)-strings.LastIndexByte(before, '\n'))
}

// LoadTemplate reads and parses the template file and renders a sample
// notification of each phase, so that a template that fails is reported
// at startup rather than at the first interruption.
func LoadTemplate(file string) (*Template, error) {
	b, err := readLimited(file, maxTemplateSize)
	if err != nil {
		return nil, err
	}
	t, err := ParseTemplate(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(file), err)
	}
	for _, m := range samples() {
		if b, err := t.Render(m); err != nil {
			return nil, fmt.Errorf("rendering a sample %s notification: %w (output %q)", m.Phase, err, excerpt(b))
		}
	}
	return t, nil
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
