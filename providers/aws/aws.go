// Package aws is the AWS provider: the node agent reads the EC2 instance
// metadata service (IMDSv2: spot interruptions, rebalance
// recommendations, scheduled maintenance, the Auto Scaling target
// lifecycle state), and the queue processor consumes an SQS queue of
// EventBridge events and Auto Scaling lifecycle hooks.
package aws

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/providers/aws/awsconfig"
	"github.com/lastcall/lastcall/providers/aws/imds"
)

// Name is the provider's name.
const Name = "aws"

// spotNotice is the notice of an EC2 spot interruption: the shortest AWS
// gives.
const spotNotice = 2 * time.Minute

// defaultEndpoint is where IMDS answers.
const defaultEndpoint = "http://169.254.169.254"

// Provider is AWS.
type Provider struct {
	imds            imds.Options
	rebalanceAction string
	// completeLifecycle: the agent completes the instance's terminate
	// lifecycle hooks itself (--asg-complete-lifecycle).
	completeLifecycle bool
	queue             queueOptions
}

var _ provider.Queue = (*Provider)(nil)

// New returns the AWS provider with its defaults.
func New() *Provider {
	return &Provider{
		imds: imds.Options{
			ASGTerminationDeadline: 2 * time.Minute,
			Signals:                imds.AllSignals(),
		},
		rebalanceAction: string(interruption.ActionCordon),
		queue:           defaultQueueOptions(),
	}
}

// Name implements provider.Provider.
func (p *Provider) Name() string { return Name }

// AddFlags implements provider.Provider.
func (p *Provider) AddFlags(fs *pflag.FlagSet) {
	o := &p.imds
	fs.StringVar(&o.Endpoint, "imds-endpoint", o.Endpoint, "Agent, AWS: EC2 instance metadata endpoint; the SDK default (http://169.254.169.254) when empty.")
	fs.BoolVar(&o.AllowIMDSv1, "imds-allow-v1", o.AllowIMDSv1, "Agent, AWS: fall back to IMDSv1 (no session token) when IMDSv2 tokens cannot be had.")
	fs.StringSliceVar(&o.Signals, "imds-signals", o.Signals, "Agent, AWS: instance metadata signals to watch: spot, rebalance, scheduled-maintenance, asg-lifecycle.")
	fs.StringVar(&p.rebalanceAction, "rebalance-action", p.rebalanceAction, "Agent, AWS: what a rebalance recommendation does: cordon, or drain.")
	fs.DurationVar(&o.ASGTerminationDeadline, "asg-termination-deadline", o.ASGTerminationDeadline, "Agent, AWS: drain deadline after the Auto Scaling target lifecycle state turns Terminated "+
		"(with --asg-complete-lifecycle, when the hooks cannot be read).")
	fs.BoolVar(&p.completeLifecycle, "asg-complete-lifecycle", p.completeLifecycle, "Agent, AWS: when the target lifecycle state turns Terminated, find the instance's group and its terminate lifecycle hooks "+
		"(DescribeAutoScalingInstances, DescribeLifecycleHooks), send heartbeats while the node drains (--heartbeat-interval), and complete each hook once the drain has ended: "+
		"CONTINUE, or --lifecycle-failure-result when it did not finish. The drain works to the hooks' global timeout, at most --lifecycle-deadline. "+
		"Needs AWS credentials (IRSA or EKS Pod Identity); the region is --region, else the instance's.")
}

// Validate implements provider.Provider.
func (p *Provider) Validate() error {
	var errs []error
	if p.imds.ASGTerminationDeadline <= 0 {
		errs = append(errs, fmt.Errorf("--asg-termination-deadline: must be positive; got %s", p.imds.ASGTerminationDeadline))
	}
	switch interruption.Action(p.rebalanceAction) {
	case interruption.ActionCordon, interruption.ActionDrain:
	default:
		errs = append(errs, fmt.Errorf("--rebalance-action: must be cordon or drain; got %q", p.rebalanceAction))
	}
	for _, s := range p.imds.Signals {
		if !slices.Contains(imds.AllSignals(), s) {
			errs = append(errs, fmt.Errorf("--imds-signals: unknown signal %q; known: %s", s, strings.Join(imds.AllSignals(), ", ")))
		}
	}
	if len(p.imds.Signals) == 0 {
		errs = append(errs, errors.New("--imds-signals: at least one signal is needed"))
	}
	if err := provider.CheckURL(p.imds.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("--imds-endpoint: %w", err))
	}
	if p.completeLifecycle {
		if !slices.Contains(p.imds.Signals, imds.SignalASGLifecycle) {
			errs = append(errs, fmt.Errorf("--asg-complete-lifecycle: needs the %s signal in --imds-signals", imds.SignalASGLifecycle))
		}
		p.queue.validateLifecycle(func(flag, format string, args ...any) {
			errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
		})
	}
	return errors.Join(errs...)
}

// NoticeWindow implements provider.Provider: a spot interruption's two
// minutes.
func (p *Provider) NoticeWindow() time.Duration { return spotNotice }

// endpoint is where IMDS is asked: the flag, else the SDK's variable,
// else the link-local address.
func (p *Provider) endpoint() string {
	if p.imds.Endpoint != "" {
		return p.imds.Endpoint
	}
	if e := os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"); e != "" {
		return e
	}
	return defaultEndpoint
}

// Detect implements provider.Provider: it asks for an IMDSv2 session
// token, which only EC2 gives.
func (p *Provider) Detect(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(p.endpoint(), "/")+"/latest/api/token", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	return provider.Expect(provider.MetadataHTTPClient(detectTimeout), req, func(r *http.Response) bool { return r.StatusCode == http.StatusOK })
}

// CauseHopLimit is the cause Diagnose names when the IMDSv2 token request
// gets no answer while IMDS answers a plain read.
const CauseHopLimit = "imds-hop-limit"

// Diagnose implements provider.Diagnoser. A token request (PUT) that gets
// no answer while a plain read (GET, no token) gets one, even a 401, is an
// IMDSv2 hop limit of 1: the token's answer may cross one network hop, and
// a pod's network namespace is a second. Karpenter's EC2NodeClass sets a
// hop limit of 1 by default.
func (p *Provider) Diagnose(ctx context.Context) (string, string) {
	base := strings.TrimRight(p.endpoint(), "/")
	client := provider.MetadataHTTPClient(detectTimeout)
	put, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	if err != nil {
		return "", ""
	}
	put.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	if resp, err := client.Do(put); err == nil {
		resp.Body.Close()
		return "", "" // a token comes back: nothing wrong with the hops
	}
	get, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/latest/meta-data/", nil)
	if err != nil {
		return "", ""
	}
	resp, err := client.Do(get)
	if err != nil {
		return "", "" // nothing answers at all: not EC2, or no route
	}
	resp.Body.Close()
	return CauseHopLimit, "the EC2 instance metadata service answers, but its IMDSv2 token does not reach this pod: " +
		"the instance's hop limit (HttpPutResponseHopLimit) is most likely 1, as Karpenter's EC2NodeClass sets by default. " +
		"Run the agent in the node's network (chart value agent.hostNetwork: true, the default), " +
		"or raise the hop limit to 2 (EC2NodeClass spec.metadataOptions.httpPutResponseHopLimit, or the launch template's)"
}

// detectTimeout bounds one answer of detection.
const detectTimeout = 2 * time.Second

// readTimeout bounds one answer of IMDS.
const readTimeout = 5 * time.Second

// Sources implements provider.Provider: one poller per enabled signal.
func (p *Provider) Sources(_ context.Context, env provider.Env) ([]interruption.Source, error) {
	o := p.imds
	o.Endpoint = p.endpoint()
	o.Interval = env.PollInterval
	o.RebalanceAction = interruption.Action(p.rebalanceAction)
	client := imds.NewClient(o, provider.MetadataHTTPClient(readTimeout))
	var hooks *asgHooks
	if p.completeLifecycle {
		hooks = newASGHooks(client, awsconfig.Options{Region: p.queue.Region, Endpoint: p.queue.Endpoint}, p.queue, env.Registry,
			env.Log.With("component", "lifecycle"), env.Clock)
		o.ASGDeadline = hooks.deadline
	}
	sources, err := imds.Sources(client, o, env.Health, env.Log, env.Clock)
	if err != nil || hooks == nil {
		return sources, err
	}
	for i, s := range sources {
		if s.Name() == imds.SourceName(imds.SignalASGLifecycle) {
			sources[i] = completingSource{Source: s, h: hooks}
		}
	}
	return sources, nil
}
