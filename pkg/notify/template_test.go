package notify

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A value is put in its string escaped, whatever it holds: the output is
// JSON, and decodes to the value.
func TestTemplateSubstitution(t *testing.T) {
	tmpl, err := ParseTemplate(`{"text": "<${detail}>", "${node}": ["${detail}", "${node}${node}"], "n": 1.5e3, "t": true}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, value, want string }{
		{"quotes", `say "bye"`, `say "bye"`},
		{"newlines and tabs", "one\ntwo\r\n\tthree", "one\ntwo\r\n\tthree"},
		{"backslashes", `C:\temp\ and \"x\" and \u0041`, `C:\temp\ and \"x\" and \u0041`},
		{"unicode", "ノード ✓ 🚀 العربية é", "ノード ✓ 🚀 العربية é"},
		{"HTML", "<b>&amp;</b>", "<b>&amp;</b>"},
		{"control characters", "nul \x00 bell \a esc \x1b", "nul \x00 bell \a esc \x1b"},
		{"line and paragraph separators", "a\u2028b\u2029c", "a\u2028b\u2029c"},
		{"invalid UTF-8", "bad \xff byte", "bad \ufffd byte"},
		{"a placeholder is not expanded again", "${node} and ${nope}", "${node} and ${nope}"},
		{"braces and dollars", "}{$}", "}{$}"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tmpl.Render(Notification{Phase: PhaseReceived, Node: `n"1`, Detail: tc.value})
			if err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, b)
			}
			want := map[string]any{"text": "<" + tc.want + ">", `n"1`: []any{tc.want, `n"1n"1`}, "n": 1500.0, "t": true}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rendered %s; want text <%s>, the node key holding it and the node twice", b, tc.want)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown placeholder", `{"text": "${nod}"}`, "line 1, column 11: unknown placeholder ${nod}; the fields are phase, node, instance,"},
		{"placeholders are case-sensitive", "{\n  \"text\": \"on ${Node}\"\n}", "line 2, column 15: unknown placeholder ${Node}"},
		{"empty placeholder", `{"text": "${}"}`, "unknown placeholder ${}"},
		{"placeholder not closed", `{"text": "${node"}`, "line 1, column 11: a placeholder not closed by }"},
		{"placeholder closed in another string", `{"a": "${node", "b": "}"}`, "a placeholder not closed by }"},
		{"placeholder outside a string", `{"evicted": ${evicted}}`, "line 1, column 13: not valid JSON: invalid character '$'"},
		{"trailing comma", "{\"text\": \"${node}\",\n}", "line 2, column 1: not valid JSON: invalid character '}'"},
		{"truncated", `{"text": "${node}"`, "not valid JSON: unexpected end of JSON input"},
		{"two documents", `{} {}`, "not valid JSON: invalid character '{' after top-level value"},
		{"empty", ``, "not valid JSON"},
		{"a Go template", `{"text": {{json .Node}}}`, "not valid JSON: invalid character '{' looking for beginning of object key string " +
			"(Go templates are no longer taken: write JSON with ${field} placeholders)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTemplate(tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A literal "${" is written "\u0024{"; a template without placeholders is
// sent as it is.
func TestTemplateLiterals(t *testing.T) {
	for _, src := range []string{`{"text": "\u0024{node}"}`, `"just a string"`, `[1, 2, {"a": null}]`} {
		tmpl, err := ParseTemplate(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		b, err := tmpl.Render(Notification{Node: "n1"})
		if err != nil || string(b) != src {
			t.Errorf("rendered %s (%v), want %s", b, err, src)
		}
	}
}

func TestLoadTemplate(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`"`+strings.Repeat("x", maxTemplateSize)+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{big, "big.json is larger than 1048576 bytes"},
		{filepath.Join(dir, "none.json"), "none.json: no such file or directory"},
		{writeTemplate(t, `{"text": ${node}}`), "hook.tmpl: line 1, column 10: not valid JSON"},
	} {
		if _, err := LoadTemplate(tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTemplate(%s): %v, want an error containing %q", filepath.Base(tc.file), err, tc.want)
		}
	}
	for _, f := range []string{"pagerduty.json", "custom.json"} {
		if _, err := LoadTemplate(filepath.Join("testdata", "templates", f)); err != nil {
			t.Errorf("example %s: %v", f, err)
		}
	}
}
