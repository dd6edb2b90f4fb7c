package notify

import (
	"strings"
	"testing"
	"time"
)

func TestTemplateExec(t *testing.T) {
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	m := Notification{Phase: PhaseFinished, Node: "n1", Instance: "i-1", Kind: "spot-interruption", Result: "timeout",
		Evicted: 3, Remaining: 2, Took: 1500 * time.Millisecond, Time: at, Deadline: at.Add(90 * time.Second), Detail: `say "hi"`}
	for _, tc := range []struct {
		name, text, want string
	}{
		{"fields", `{{.Node}}/{{.Instance}} {{.Phase}} {{.Evicted}}`, "n1/i-1 finished 3"},
		{"if else if else", `{{if eq .Result "success"}}ok{{else if eq .Result "timeout" "failure"}}bad{{else}}?{{end}}`, "bad"},
		{"with sets dot, else", `{{with .Cluster}}in {{.}}{{else}}no cluster{{end}} {{with .Instance}}({{.}}){{end}}`, "no cluster (i-1)"},
		{"time methods", `{{.Deadline.UTC.Format "15:04:05Z"}} {{if .Deadline.After .Time}}in {{duration (.Deadline.Sub .Time)}}{{end}} {{.Deadline.IsZero}}`, "12:01:30Z in 1m30s false"},
		{"duration", `{{duration .Took}} {{.Took.Seconds}}`, "1.5s 1.5"},
		{"json escapes", `{{json .Detail}}`, `"say \"hi\""`},
		{"pipelines and printf", `{{.Node | printf "%s!"}} {{printf "%d/%d" .Evicted .Remaining}}`, "n1! 3/2"},
		{"logic", `{{and .Node .Instance}} {{or .Cluster "none"}} {{not .Cluster}} {{if and (gt .Evicted 2) (lt .Remaining 3)}}y{{end}}`, "i-1 none true y"},
		{"ne and len", `{{ne .Phase "received"}} {{len .Node}}`, "true 2"},
		{"define, template, include and $", `{{define "w"}}[{{.Node}}]{{end}}{{template "w" .}}{{include "w" $ | json}}{{with .Instance}}{{$.Node}}{{end}}`, `[n1]"[n1]"n1`},
		{"trimming and comments", "{{- /* c */ -}}\n  {{ .Node -}}  \n!", "n1!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseTemplate("t", tc.text)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := tmpl.Execute(&b, m); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
		atParse          bool
	}{
		{"unknown function", `{{nope .Node}}`, `function "nope" not defined`, true},
		{"range", `{{range .Node}}x{{end}}`, "range is not supported", true},
		{"variables", `{{$x := .Node}}{{$x}}`, "variables are not supported", true},
		{"unclosed", `{{if .Node}}`, "unexpected EOF", true},
		{"unknown field", `{{.Pod}}`, "has no field or method Pod", false},
		{"method without its argument", `{{.Deadline.Format}}`, "Format takes 1 argument", false},
		{"field given arguments", `{{.Node "x"}}`, "Node takes no arguments", false},
		{"wrong argument type", `{{.Deadline.After .Node}}`, "After takes a time.Time, got string", false},
		{"incomparable", `{{eq .Deadline "x"}}`, "cannot compare", false},
		{"missing define", `{{template "nope" .}}`, `no template "nope"`, false},
		{"endless recursion", `{{define "a"}}{{template "a" .}}{{end}}{{template "a" .}}`, "nested deeper than", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := parseTemplate("t", tc.text)
			if tc.atParse {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("parse error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = tmpl.Execute(&strings.Builder{}, Notification{Node: "n1"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("execute error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
