package notify

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// The built-in payloads.
const (
	// FormatSlack is a Slack incoming-webhook message, {"text": ...}.
	FormatSlack = "slack"
	// FormatTeams is a Microsoft Teams message with an Adaptive Card.
	FormatTeams = "teams"
	// FormatJSON is the Notification itself (see MarshalJSON).
	FormatJSON = "json"
)

// Options configure the notifier.
type Options struct {
	// URL receives a POST per notification; empty disables notifications.
	URL string
	// Format is the built-in payload: FormatSlack (when empty),
	// FormatTeams or FormatJSON.
	Format string
	// TemplateFile, when set, is the body's template (see Template),
	// in place of Format.
	TemplateFile string
	// Timeout bounds each attempt; DefaultTimeout when zero.
	Timeout time.Duration
	// Cluster names the cluster in notifications (optional).
	Cluster string
	// Headers are added to every request (e.g. Authorization).
	Headers map[string]string
	// DedupeWindow is how long a notified (key, phase) suppresses repeats
	// unless Forget ends it first; DefaultDedupeWindow when zero.
	DedupeWindow time.Duration
}

// AddFlags declares the webhook's flags on fs. Their environment
// variables are the program's: $LASTCALL_WEBHOOK_URL for --webhook-url.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.URL, "webhook-url", o.URL, "URL POSTed a JSON notification when an interruption is received and when its drain finishes (one of each per instance or node); none when empty. "+
		"Such URLs usually hold a secret: set $LASTCALL_WEBHOOK_URL from a Secret rather than the flag.")
	fs.StringVar(&o.Format, "webhook-format", cmp.Or(o.Format, FormatSlack), "Body of the webhook's POST: slack (a {\"text\": ...} message), teams (a Microsoft Teams message with an Adaptive Card) or json (the notification's fields).")
	fs.StringVar(&o.TemplateFile, "webhook-template-file", o.TemplateFile, "JSON body of the webhook's POST, in place of --webhook-format, whose strings may hold ${field} placeholders: "+
		"${node}, ${phase}, ${summary}, ... (every key of --webhook-format=json).")
	fs.DurationVar(&o.Timeout, "webhook-timeout", o.Timeout, "Timeout of each webhook attempt (3 attempts at most, on network errors, 429 and 5xx).")
	fs.StringVar(&o.Cluster, "cluster-name", o.Cluster, "Name of the cluster, shown in webhook notifications; optional.")
}

// Validate checks the options, the template file included. Each error
// names its flag.
func (o Options) Validate() error {
	var errs []error
	bad := func(flag string, err error) { errs = append(errs, fmt.Errorf("--%s: %w", flag, err)) }
	if o.URL != "" {
		if err := CheckURL(o.URL); err != nil {
			bad("webhook-url", err)
		}
	}
	if _, ok := formats[cmp.Or(o.Format, FormatSlack)]; !ok {
		bad("webhook-format", fmt.Errorf("must be slack, teams or json; got %q", o.Format))
	}
	if o.TemplateFile != "" {
		if _, err := LoadTemplate(o.TemplateFile); err != nil {
			bad("webhook-template-file", err)
		}
	}
	if o.Timeout <= 0 {
		bad("webhook-timeout", fmt.Errorf("must be positive; got %s", o.Timeout))
	}
	return errors.Join(errs...)
}

// payload returns the renderer of o's bodies, and its name for logs.
func (o Options) payload() (func(Notification) ([]byte, error), string, error) {
	if o.TemplateFile != "" {
		t, err := LoadTemplate(o.TemplateFile)
		if err != nil {
			return nil, "", fmt.Errorf("webhook template: %w", err)
		}
		return t.Render, o.TemplateFile, nil
	}
	format := cmp.Or(o.Format, FormatSlack)
	render, ok := formats[format]
	if !ok {
		return nil, "", fmt.Errorf("webhook format: must be slack, teams or json; got %q", format)
	}
	return render, format, nil
}
