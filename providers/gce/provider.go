package gce

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/provider"
)

// Name is the provider's name.
const Name = "gce"

// Provider is Google Compute Engine.
type Provider struct {
	o Options
}

var _ provider.Provider = (*Provider)(nil)

// New returns the GCE provider with its defaults.
func New() *Provider {
	return &Provider{o: Options{SpotDeadline: DefaultSpotDeadline, MaintenanceDeadline: DefaultMaintenanceDeadline}}
}

// Name implements provider.Provider.
func (p *Provider) Name() string { return Name }

// AddFlags implements provider.Provider.
func (p *Provider) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&p.o.SpotDeadline, "gce-preemption-deadline", p.o.SpotDeadline, "Agent, GCE: time from a preemption notice to the VM stopping (30 s for spot and preemptible VMs).")
	fs.DurationVar(&p.o.MaintenanceDeadline, "gce-maintenance-deadline", p.o.MaintenanceDeadline, "Agent, GCE: time from a TERMINATE_ON_HOST_MAINTENANCE notice to the VM stopping.")
}

// Validate implements provider.Provider.
func (p *Provider) Validate() error {
	var errs []error
	if p.o.SpotDeadline <= 0 {
		errs = append(errs, fmt.Errorf("--gce-preemption-deadline: must be positive; got %s", p.o.SpotDeadline))
	}
	if p.o.MaintenanceDeadline <= 0 {
		errs = append(errs, fmt.Errorf("--gce-maintenance-deadline: must be positive; got %s", p.o.MaintenanceDeadline))
	}
	return errors.Join(errs...)
}

// NoticeWindow implements provider.Provider: a preemption's notice.
func (p *Provider) NoticeWindow() time.Duration { return p.o.SpotDeadline }

// host is the metadata server's host: $GCE_METADATA_HOST, as the
// metadata library reads it, else the link-local address.
func host() string {
	if h := os.Getenv("GCE_METADATA_HOST"); h != "" {
		return h
	}
	return "169.254.169.254"
}

// Detect implements provider.Provider: it asks with Metadata-Flavor:
// Google, which GCE answers with too.
func (p *Provider) Detect(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+strings.TrimRight(host(), "/")+"/computeMetadata/v1/instance/id", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	return provider.Expect(provider.MetadataHTTPClient(2*time.Second), req, func(r *http.Response) bool {
		return r.StatusCode == http.StatusOK && r.Header.Get("Metadata-Flavor") == "Google"
	})
}

// Sources implements provider.Provider: the long-polled preemption and
// maintenance sources, through a client that waits longer than a long
// poll.
func (p *Provider) Sources(_ context.Context, env provider.Env) ([]interruption.Source, error) {
	o := p.o
	if o.LongPollTimeout == 0 {
		o.LongPollTimeout = DefaultLongPollTimeout
	}
	client := metadata.NewWithOptions(&metadata.Options{Client: provider.MetadataHTTPClient(o.LongPollTimeout + stallGrace + readTimeout)})
	return Sources(client, o, env.Health, env.Log, env.Clock)
}
