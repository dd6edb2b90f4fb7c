package notify

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// AddFlags declares the webhook's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.URL, "webhook-url", o.URL, "URL POSTed a JSON notification when an interruption is received and when its drain finishes (one of each per instance or node); none when empty. "+
		"Such URLs usually hold a secret: set $LASTCALL_WEBHOOK_URL from a Secret rather than the flag.")
	fs.StringVar(&o.TemplateFile, "webhook-template-file", o.TemplateFile, "Go template of the webhook's JSON body, over a notify.Notification; a built-in Slack-compatible {\"text\": ...} message when empty.")
	fs.DurationVar(&o.Timeout, "webhook-timeout", o.Timeout, "Timeout of each webhook attempt (3 attempts at most, on network errors, 429 and 5xx).")
	fs.StringVar(&o.Cluster, "cluster-name", o.Cluster, "Name of the cluster, shown in webhook notifications; optional.")
}

// Validate checks the options set by flags; each error names its flag.
func (o Options) Validate() error {
	var errs []error
	if o.URL != "" {
		if err := CheckURL(o.URL); err != nil {
			errs = append(errs, fmt.Errorf("--webhook-url: %w", err))
		}
	}
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--webhook-timeout: must be positive; got %s", o.Timeout))
	}
	if o.TemplateFile != "" {
		if _, err := LoadTemplate(o.TemplateFile); err != nil {
			errs = append(errs, fmt.Errorf("--webhook-template-file: %w", err))
		}
	}
	return errors.Join(errs...)
}
