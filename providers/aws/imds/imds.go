// Package imds reads the interruption notices of an EC2 instance from its
// instance metadata service (IMDS): spot interruptions, rebalance
// recommendations, scheduled maintenance and Auto Scaling termination.
//
// Each signal lives in its own file as a pure parse function and a
// PollFunc; Sources turns the enabled ones into interruption.Pollers, which
// own the loop, the backoff, health reporting and de-duplication.
//
// A notice that is not there is not an error: IMDS answers 404 for a path
// with no notice (and for autoscaling/target-lifecycle-state when the
// instance is not in an Auto Scaling group), and the PollFunc then returns
// no events. A 404 from the token endpoint is an error, never "no notice".
package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// The signal names Options.Signals accepts.
const (
	SignalSpot                 = "spot"
	SignalRebalance            = "rebalance"
	SignalScheduledMaintenance = "scheduled-maintenance"
	SignalASGLifecycle         = "asg-lifecycle"
)

// AllSignals lists every signal, in the order Sources returns them.
func AllSignals() []string {
	return []string{SignalSpot, SignalRebalance, SignalScheduledMaintenance, SignalASGLifecycle}
}

// sourcePrefix starts the name of every source of this package.
const sourcePrefix = "imds-"

// SourceName is the name of the source of signal.
func SourceName(signal string) string { return sourcePrefix + signal }

// DefaultInterval is the poll interval when Options.Interval is zero.
const DefaultInterval = 250 * time.Millisecond

const (
	// maxAttempts of one SDK call: a second attempt lets the SDK fetch a new
	// token after a 401 (an IMDS that restarted); everything else is retried
	// by the Poller with backoff.
	maxAttempts = 2
	// maxRetryBackoff caps the SDK's wait before its second attempt.
	maxRetryBackoff = 100 * time.Millisecond
	// maxBody bounds what is read of one answer; notices are a few hundred
	// bytes.
	maxBody = 64 << 10
	// bodyExcerpt is how much of a malformed body goes into the error.
	bodyExcerpt = 200
	// tokenPath is the IMDSv2 session token endpoint.
	tokenPath = "/latest/api/token"
)

// Options configure the IMDS sources.
type Options struct {
	// Endpoint is the IMDS base URL; "" takes the SDK's default
	// (AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254).
	Endpoint string
	// AllowIMDSv1 lets the client fall back to IMDSv1 when no token can be
	// had. Off, every read needs an IMDSv2 token.
	AllowIMDSv1 bool
	// Interval between reads of each signal; zero means DefaultInterval.
	Interval time.Duration
	// RebalanceAction is what a rebalance recommendation asks for:
	// interruption.ActionCordon (the default when empty) or ActionDrain.
	RebalanceAction interruption.Action
	// ASGTerminationDeadline is how long after lastcall first sees
	// target-lifecycle-state Terminated the node is expected to go; zero
	// leaves the deadline to the agent's fallback.
	ASGTerminationDeadline time.Duration
	// ASGDeadline, when set, gives the time the instance may take to go
	// once it is seen terminating (the lifecycle hooks' own timeout); it
	// is asked once per termination, and ASGTerminationDeadline applies
	// when it fails.
	ASGDeadline func(ctx context.Context) (time.Duration, error)
	// Signals to watch, a subset of AllSignals; empty means all.
	Signals []string
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	if o.Interval < 0 {
		return fmt.Errorf("imds: negative interval %s", o.Interval)
	}
	if o.ASGTerminationDeadline < 0 {
		return fmt.Errorf("imds: negative ASG termination deadline %s", o.ASGTerminationDeadline)
	}
	switch o.RebalanceAction {
	case "", interruption.ActionCordon, interruption.ActionDrain:
	default:
		return fmt.Errorf("imds: rebalance action %q is neither %q nor %q",
			o.RebalanceAction, interruption.ActionCordon, interruption.ActionDrain)
	}
	for i, s := range o.Signals {
		if !slices.Contains(AllSignals(), s) {
			return fmt.Errorf("imds: unknown signal %q (known: %v)", s, AllSignals())
		}
		if slices.Contains(o.Signals[:i], s) {
			return fmt.Errorf("imds: signal %q listed twice", s)
		}
	}
	return nil
}

// MetadataGetter is the part of the IMDS client the sources use.
type MetadataGetter interface {
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

// NewClient returns an IMDS client for the sources: IMDSv2 tokens (fetched
// and refreshed by the SDK) with no fallback to IMDSv1 unless allowed, at
// most two attempts per read, and no retry quota (the Poller retries).
// httpClient, when not nil, carries the requests (one without a proxy:
// the SDK's default honours HTTP_PROXY).
func NewClient(o Options, httpClient imds.HTTPClient) *imds.Client {
	fallback := aws.FalseTernary
	if o.AllowIMDSv1 {
		fallback = aws.TrueTernary
	}
	return imds.New(imds.Options{
		// Reading the instance's own notices is the point: never off
		// because AWS_EC2_METADATA_DISABLED, meant for the SDK's
		// credential and region lookups, is set.
		ClientEnableState: imds.ClientEnabled,
		Endpoint:          o.Endpoint,
		EnableFallback:    fallback,
		// The SDK's default cap (1 s) would replace maxRetryBackoff.
		DisableDefaultMaxBackoff: true,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = maxAttempts
			so.MaxBackoff = maxRetryBackoff
			so.RateLimiter = ratelimit.None
		}),
		APIOptions: []func(*middleware.Stack) error{addTransportRecorder},
		HTTPClient: httpClient,
	})
}

// Sources returns one Poller per enabled signal, named "imds-<signal>". log
// and clk may be nil (slog.Default, the real clock).
func Sources(client MetadataGetter, o Options, health interruption.HealthReporter, log *slog.Logger, clk clock.Clock) ([]interruption.Source, error) {
	if client == nil {
		return nil, errors.New("imds: no client")
	}
	if health == nil {
		return nil, errors.New("imds: no health reporter")
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.RebalanceAction == "" {
		o.RebalanceAction = interruption.ActionCordon
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	signals := o.Signals
	if len(signals) == 0 {
		signals = AllSignals()
	}
	var sources []interruption.Source
	for _, s := range AllSignals() { // a stable order
		if !slices.Contains(signals, s) {
			continue
		}
		var poll interruption.PollFunc
		switch s {
		case SignalSpot:
			poll = pollSpot(client)
		case SignalRebalance:
			poll = pollRebalance(client, o.RebalanceAction)
		case SignalScheduledMaintenance:
			poll = pollMaintenance(client, sourcePrefix+s, health, log)
		case SignalASGLifecycle:
			poll = newASGLifecyclePoller(client, o.ASGTerminationDeadline, clk).withDeadline(o.ASGDeadline, log).poll
		}
		sources = append(sources, &interruption.Poller{
			SourceName: sourcePrefix + s,
			Poll:       poll,
			Interval:   o.Interval,
			Health:     health,
			Log:        log,
			Clock:      clk,
		})
	}
	return sources, nil
}

// Get reads one metadata path (instance-id, placement/region) and returns
// its answer, trimmed; a 404 is an error.
func Get(ctx context.Context, c MetadataGetter, path string) (string, error) {
	body, found, err := fetch(ctx, c, path)
	switch {
	case err != nil:
		return "", err
	case !found:
		return "", fmt.Errorf("instance metadata %s: not found", path)
	}
	v := strings.TrimSpace(string(body))
	if v == "" {
		return "", fmt.Errorf("instance metadata %s: empty", path)
	}
	return v, nil
}

// fetch reads one metadata path. found is false when IMDS answered 404 for
// that path: no notice.
func fetch(ctx context.Context, c MetadataGetter, path string) (body []byte, found bool, err error) {
	rec := &transportRecorder{}
	out, err := c.GetMetadata(withTransportRecorder(ctx, rec), &imds.GetMetadataInput{Path: path})
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, classify(path, err, rec.last())
	}
	defer out.Content.Close()
	body, err = io.ReadAll(io.LimitReader(out.Content, maxBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(body) > maxBody {
		return nil, false, malformed(path, body, "answer longer than %d bytes", maxBody)
	}
	return body, true, nil
}

// isNotFound says whether err is a 404 for the metadata path itself, not
// for the token endpoint.
func isNotFound(err error) bool {
	var re interface {
		HTTPStatusCode() int
		HTTPResponse() *smithyhttp.Response
	}
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusNotFound {
		return false
	}
	resp := re.HTTPResponse()
	if resp == nil || resp.Response == nil || resp.Request == nil {
		return true
	}
	return resp.Request.URL.Path != tokenPath
}

// classify gives err a Reason. The SDK hides why a token could not be had
// behind an error that does not unwrap, so the transport's own outcome,
// recorded by addTransportRecorder, fills in.
func classify(path string, err error, last attempt) error {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return &interruption.ReadError{
			Reason: interruption.ReasonHTTP,
			Err:    fmt.Errorf("reading %s: HTTP %d: %w", path, re.HTTPStatusCode(), err),
		}
	}
	if interruption.ReasonOf(err) != interruption.ReasonOther {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	switch {
	case last.err != nil:
		return fmt.Errorf("reading %s: %w (last request to %s: %w)", path, err, last.path, last.err)
	case last.status != 0 && (last.status < 200 || last.status > 299):
		return &interruption.ReadError{
			Reason: interruption.ReasonHTTP,
			Err:    fmt.Errorf("reading %s: HTTP %d from %s: %w", path, last.status, last.path, err),
		}
	}
	return fmt.Errorf("reading %s: %w", path, err)
}

// malformed is the error for an answer that cannot be understood. Values
// quoted from the body in format's arguments should go through excerpt.
func malformed(path string, body []byte, format string, args ...any) error {
	return interruption.Malformed(fmt.Errorf("%s: %s (body %q)", path, fmt.Sprintf(format, args...), excerpt(string(body))))
}

// excerpt cuts s to at most bodyExcerpt bytes, marking the cut.
func excerpt(s string) string {
	if len(s) <= bodyExcerpt {
		return s
	}
	return s[:bodyExcerpt] + "..."
}

// pollPath is the PollFunc of a signal read from one path and parsed by
// parse; a 404 means no notice.
func pollPath(c MetadataGetter, path string, parse func([]byte) ([]interruption.Event, error)) interruption.PollFunc {
	return func(ctx context.Context) ([]interruption.Event, error) {
		body, found, err := fetch(ctx, c, path)
		if err != nil || !found {
			return nil, err
		}
		return parse(body)
	}
}
