package interruption

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
)

// Reason classifies why a read of a signal failed. The set is small and
// fixed, so it is safe as a metric label.
type Reason string

const (
	ReasonUnreachable Reason = "unreachable"
	ReasonTimeout     Reason = "timeout"
	ReasonMalformed   Reason = "malformed"
	ReasonHTTP        Reason = "http_error"
	ReasonOther       Reason = "error"
)

// ReadError is an error with its Reason.
type ReadError struct {
	Reason Reason
	Err    error
}

func (e *ReadError) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// Malformed marks err as a signal the source could not parse.
func Malformed(err error) error { return &ReadError{Reason: ReasonMalformed, Err: err} }

// ReasonOf classifies err.
func ReasonOf(err error) Reason {
	var re *ReadError
	if errors.As(err, &re) {
		return re.Reason
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return ReasonTimeout
		}
		return ReasonUnreachable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return ReasonUnreachable
	}
	return ReasonOther
}

// HealthReporter receives the outcome of every read.
type HealthReporter interface {
	Success(source string)
	Failure(source, reason string, err error)
}

// PollFunc reads a signal once and returns the notices active now. A
// withdrawn notice is returned with ActionCancel and the ID it had.
type PollFunc func(ctx context.Context) ([]Event, error)

// Poller turns a PollFunc into a Source: it polls on an interval, backs off
// on errors, reports health, and sends each event once per (ID, Action).
type Poller struct {
	SourceName string
	Poll       PollFunc
	Interval   time.Duration
	// Timeout bounds one read; zero means Interval, at least one second.
	Timeout time.Duration
	// MaxBackoff caps the wait after repeated errors; zero means 10 s.
	MaxBackoff time.Duration
	// Health receives every outcome; nil discards them.
	Health HealthReporter
	Log    *slog.Logger
	Clock  clock.Clock
}

// Name implements Source.
func (p *Poller) Name() string { return p.SourceName }

// Run implements Source.
func (p *Poller) Run(ctx context.Context, out chan<- Event) error {
	clk := p.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("source", p.SourceName)
	health := p.Health
	if health == nil {
		health = DiscardHealth{}
	}
	sent := Dedup{}
	failures := 0
	backoff := p.backoff()
	for {
		events, err := p.pollOnce(ctx)
		wait := p.Interval
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures++
			reason := ReasonOf(err)
			health.Failure(p.SourceName, string(reason), err)
			wait = backoff.Step()
			log.Warn("reading signal failed", "reason", reason, "err", err, "consecutive", failures, "retry_in", wait)
		} else {
			if failures > 0 {
				log.Info("reading signal recovered", "after_failures", failures)
				backoff = p.backoff()
			}
			failures = 0
			now := clk.Now()
			for _, e := range events {
				if !sent.Fresh(e) {
					continue
				}
				e.Source = p.SourceName
				if e.Observed.IsZero() {
					e.Observed = now
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			// Reported after the events are sent: a consumer that waits
			// for every source's first read then has its notices.
			health.Success(p.SourceName)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clk.After(wait):
		}
	}
}

func (p *Poller) pollOnce(ctx context.Context) (events []Event, err error) {
	timeout := p.Timeout
	if timeout == 0 {
		timeout = max(p.Interval, time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		// A parser bug must never take the agent down: count it instead.
		if r := recover(); r != nil {
			events, err = nil, &ReadError{Reason: ReasonMalformed, Err: fmt.Errorf("panic while reading signal: %v\n%s", r, debug.Stack())}
		}
	}()
	return p.Poll(ctx)
}

// backoff paces reads after failures: the interval, doubling to
// MaxBackoff.
func (p *Poller) backoff() wait.Backoff {
	maxWait := p.MaxBackoff
	if maxWait == 0 {
		maxWait = 10 * time.Second
	}
	return NewBackoff(p.Interval, maxWait)
}

// DiscardHealth is a HealthReporter that drops every report.
type DiscardHealth struct{}

// Success implements HealthReporter.
func (DiscardHealth) Success(string) {}

// Failure implements HealthReporter.
func (DiscardHealth) Failure(string, string, error) {}

// Dedup lets each (ID, Action) of a source through once: a notice seen on
// every read is sent once, and its cancel once.
type Dedup map[string]Action

// Fresh reports whether e has not been let through yet, and marks it so.
func (d Dedup) Fresh(e Event) bool {
	if a, ok := d[e.ID]; ok && a == e.Action {
		return false
	}
	d[e.ID] = e.Action
	return true
}

// NewBackoff paces a source's reads after failures: base, doubling,
// capped at limit. Make a new one once a read succeeds.
func NewBackoff(base, limit time.Duration) wait.Backoff {
	return wait.Backoff{Duration: base, Factor: 2, Cap: limit, Steps: math.MaxInt32}
}
