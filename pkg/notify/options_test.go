package notify

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parseFlags(t *testing.T, args ...string) (Options, error) {
	t.Helper()
	o := Options{Timeout: DefaultTimeout}
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o, o.Validate()
}

func TestFlags(t *testing.T) {
	tmpl := writeTemplate(t, `{"summary": "${summary}"}`)
	for _, tc := range []struct {
		name string
		args []string
		want Options
	}{
		{"defaults: no webhook", nil, Options{Format: FormatSlack, Timeout: DefaultTimeout}},
		{"teams", []string{"--webhook-url=https://prod.westeurope.logic.azure.com/workflows/x", "--webhook-format=teams", "--cluster-name=prod"},
			Options{URL: "https://prod.westeurope.logic.azure.com/workflows/x", Format: FormatTeams, Timeout: DefaultTimeout, Cluster: "prod"}},
		{"a template", []string{"--webhook-url=http://receiver.monitoring:8080/hook", "--webhook-template-file=" + tmpl, "--webhook-timeout=2s"},
			Options{URL: "http://receiver.monitoring:8080/hook", Format: FormatSlack, TemplateFile: tmpl, Timeout: 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o, tc.want) {
				t.Errorf("parsed %+v, want %+v", o, tc.want)
			}
		})
	}
}

// Each error names its flag, and none repeats the URL.
func TestValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--webhook-url=ftp://hooks.example/secret"}, []string{`--webhook-url: must be an absolute http or https URL; got scheme "ftp"`}},
		{[]string{"--webhook-url=hooks.example/secret"}, []string{`--webhook-url: must be an absolute http or https URL; got scheme ""`}},
		{[]string{"--webhook-format=discord"}, []string{`--webhook-format: must be slack, teams or json; got "discord"`}},
		{[]string{"--webhook-timeout=0s"}, []string{"--webhook-timeout: must be positive; got 0s"}},
		{[]string{"--webhook-template-file=/no/such/hook.json"}, []string{"--webhook-template-file: open /no/such/hook.json: no such file"}},
		{[]string{"--webhook-template-file=" + writeTemplate(t, `{"text": "${pod}"}`)}, []string{"--webhook-template-file: hook.tmpl: line 1, column 11: unknown placeholder ${pod}"}},
		{[]string{"--webhook-url=https:///secret", "--webhook-format=xml", "--webhook-timeout=-1s"},
			[]string{"--webhook-url: must be an absolute http or https URL; got no host", "--webhook-format:", "--webhook-timeout:"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseFlags(t, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error repeats the URL: %v", err)
			}
		})
	}
}
