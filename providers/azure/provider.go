package azure

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/provider"
)

// Name is the provider's name.
const Name = "azure"

// evictionNotice is the least notice of an Azure Spot eviction or Preempt
// scheduled event.
const evictionNotice = 30 * time.Second

// Provider is Azure.
type Provider struct {
	o Options
}

var _ provider.Provider = (*Provider)(nil)

// New returns the Azure provider with its defaults.
func New() *Provider { return &Provider{} }

// Name implements provider.Provider.
func (p *Provider) Name() string { return Name }

// AddFlags implements provider.Provider.
func (p *Provider) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&p.o.Endpoint, "azure-endpoint", p.o.Endpoint, "Agent, Azure: instance metadata endpoint; http://169.254.169.254 when empty.")
	fs.BoolVar(&p.o.Acknowledge, "azure-acknowledge", p.o.Acknowledge, "Agent, Azure: after a drain, approve the scheduled event (StartRequests) so the platform proceeds early.")
	fs.BoolVar(&p.o.DrainFreeze, "azure-drain-freeze", p.o.DrainFreeze, "Agent, Azure: drain on Freeze events too (by default they are only reported).")
}

// Validate implements provider.Provider.
func (p *Provider) Validate() error {
	if err := provider.CheckURL(p.o.Endpoint); err != nil {
		return fmt.Errorf("--azure-endpoint: %w", err)
	}
	return nil
}

// NoticeWindow implements provider.Provider: a Spot eviction's notice.
func (p *Provider) NoticeWindow() time.Duration { return evictionNotice }

func (p *Provider) endpoint() string {
	if p.o.Endpoint != "" {
		return strings.TrimRight(p.o.Endpoint, "/")
	}
	return DefaultEndpoint
}

// Detect implements provider.Provider: it asks for the scheduled events
// document with Metadata: true.
func (p *Provider) Detect(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.endpoint()+eventsPath+"?api-version="+apiVersion, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	return provider.Expect(provider.MetadataHTTPClient(2*time.Second), req, func(r *http.Response) bool {
		return r.StatusCode == http.StatusOK && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
	})
}

// readTimeout bounds one answer of the scheduled events endpoint.
const readTimeout = 10 * time.Second

// Sources implements provider.Provider: the scheduled events source of
// this VM, which it names from env.ProviderID or else from instance
// metadata (see vmName). When it can tell neither way, it returns an error
// that says what it tried: the events of the other VMs of the placement
// group must not drain this node, nor be approved by it.
func (p *Provider) Sources(ctx context.Context, env provider.Env) ([]interruption.Source, error) {
	o := p.o
	o.Endpoint = p.endpoint()
	o.Interval = env.PollInterval
	hc := provider.MetadataHTTPClient(readTimeout)
	log := env.Log
	if log == nil {
		log = slog.Default()
	}
	var clk clock.Clock = clock.RealClock{}
	if env.Clock != nil {
		clk = env.Clock
	}
	name, err := vmName(ctx, hc, o.Endpoint, env.ProviderID, log.With("source", SourceName), clk)
	if err != nil {
		return nil, err
	}
	o.VMName = name
	return Sources(hc, o, env.Health, env.Log, env.Clock)
}
