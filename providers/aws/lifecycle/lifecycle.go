// Package lifecycle completes Auto Scaling lifecycle actions, and keeps them
// alive with heartbeats while a node drains. Completing is an explicit step
// of its own (Completer.Complete), never a side effect of draining.
//
// Auto Scaling answers ValidationError when the action is no longer active:
// completed by someone else, timed out (the hook's default result was
// applied), or named with a wrong token. Both calls then return an error
// wrapping ErrNoActiveAction and are not retried. Other failures, which
// remain after the SDK's own retries (3 attempts for throttling, 5xx and
// network errors), are retried by this package: heartbeats at the next
// interval, completion with capped, jittered exponential backoff until ctx
// ends.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/providers/aws/messages"
)

// API is the part of the Auto Scaling client the Completer uses;
// *autoscaling.Client implements it.
type API interface {
	CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput,
		optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
	RecordLifecycleActionHeartbeat(ctx context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput,
		optFns ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error)
}

var _ API = (*autoscaling.Client)(nil)

// Result is a lifecycle action's result.
type Result string

const (
	// Continue lets the transition go on: the instance launches, or
	// terminates.
	Continue Result = "CONTINUE"
	// Abandon abandons a launch (the instance is terminated) and, for a
	// termination, skips the remaining hooks; the instance still
	// terminates.
	Abandon Result = "ABANDON"
)

// Valid says whether r is CONTINUE or ABANDON.
func (r Result) Valid() bool { return r == Continue || r == Abandon }

// ErrNoActiveAction says that Auto Scaling has no such active lifecycle
// action any more (it answered ValidationError): it was completed
// elsewhere, timed out, or the token is wrong. The caller treats the action
// as done.
var ErrNoActiveAction = errors.New("no active lifecycle action")

const (
	// minBackoff and maxBackoff bound the wait between CompleteLifecycleAction
	// calls that failed (each already retried by the SDK): it doubles from
	// [minBackoff, 2×minBackoff), with jitter, to [maxBackoff, 2×maxBackoff).
	minBackoff = 500 * time.Millisecond
	maxBackoff = 15 * time.Second
	// callTimeout bounds one CompleteLifecycleAction call, the SDK's retries
	// included, so that a stuck connection does not hold Complete.
	callTimeout = 30 * time.Second
	// minHeartbeatTimeout is the shortest bound of one heartbeat call; it is
	// the heartbeat interval when that is longer.
	minHeartbeatTimeout = 10 * time.Second
)

// Completer heartbeats and completes lifecycle actions. It is safe for
// concurrent use.
type Completer struct {
	api      API
	log      *slog.Logger
	clock    clock.WithTicker
	interval time.Duration
	metrics  *metrics
}

// NewCompleter returns a Completer calling api, with its metrics on reg
// (none when nil), logging to log (nothing when nil), reading time from clk
// (the real clock when nil) and sending a heartbeat every heartbeatInterval,
// which must be positive and well below the hooks' heartbeat timeout.
func NewCompleter(api API, reg prometheus.Registerer, log *slog.Logger, clk clock.WithTicker, heartbeatInterval time.Duration) *Completer {
	if heartbeatInterval <= 0 {
		panic(fmt.Sprintf("lifecycle.NewCompleter: heartbeat interval %s is not positive", heartbeatInterval))
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Completer{api: api, log: log, clock: clk, interval: heartbeatInterval, metrics: newMetrics(reg)}
}

// KeepAlive sends RecordLifecycleActionHeartbeat for a at once (a processor
// restarted in the middle of a drain resumes the heartbeats without delay)
// and then every heartbeat interval, until ctx ends (it returns nil) or
// Auto Scaling says the action is gone (it returns an error wrapping
// ErrNoActiveAction). Other failures are logged and counted, and the next
// heartbeat is sent at the next interval.
func (c *Completer) KeepAlive(ctx context.Context, a messages.LifecycleAction) error {
	if err := validate(a); err != nil {
		return fmt.Errorf("keeping a lifecycle action alive: %w", err)
	}
	log := c.log.With(attrs(a)...)
	ticker := c.clock.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		if err := c.heartbeat(ctx, log, a); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
		}
	}
}

// heartbeat sends one heartbeat. It returns an error only when the action
// is gone.
func (c *Completer) heartbeat(ctx context.Context, log *slog.Logger, a messages.LifecycleAction) error {
	callCtx, cancel := context.WithTimeout(ctx, max(c.interval, minHeartbeatTimeout))
	defer cancel()
	_, err := c.api.RecordLifecycleActionHeartbeat(callCtx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(a.GroupName),
		LifecycleHookName:    aws.String(a.HookName),
		InstanceId:           optional(a.InstanceID),
		LifecycleActionToken: optional(a.Token),
	})
	switch {
	case err == nil:
		c.metrics.heartbeats.WithLabelValues(outcomeSuccess).Inc()
		log.Debug("lifecycle heartbeat sent")
		return nil
	case ctx.Err() != nil:
		// Stopping: not a failure of AWS's.
		return nil
	case gone(err):
		c.metrics.heartbeats.WithLabelValues(outcomeGone).Inc()
		log.Info("lifecycle action no longer active; heartbeats stop", "err", err)
		return fmt.Errorf("recording a heartbeat for the lifecycle action of %s: %w: %w", a.InstanceID, ErrNoActiveAction, err)
	default:
		c.metrics.heartbeats.WithLabelValues(outcomeError).Inc()
		log.Warn("lifecycle heartbeat failed; retrying at the next interval", "err", err, "interval", c.interval)
		return nil
	}
}

// Complete sends CompleteLifecycleAction for a with result. When Auto
// Scaling says the action is gone it returns an error wrapping
// ErrNoActiveAction, which the caller treats as done. Other failures are
// retried with capped, jittered exponential backoff until ctx ends; the
// error then wraps both ctx's error and the last failure. Give it a ctx
// that ends: a failure that never clears (say, a missing IAM permission)
// is retried as long as ctx lasts.
func (c *Completer) Complete(ctx context.Context, a messages.LifecycleAction, result Result) error {
	if err := validate(a); err != nil {
		return fmt.Errorf("completing a lifecycle action: %w", err)
	}
	if !result.Valid() {
		return fmt.Errorf("completing the lifecycle action of %s: invalid result %q (want %s or %s)", a.InstanceID, result, Continue, Abandon)
	}
	log := c.log.With(attrs(a)...).With("result", string(result))
	in := &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(a.GroupName),
		LifecycleHookName:     aws.String(a.HookName),
		InstanceId:            optional(a.InstanceID),
		LifecycleActionToken:  optional(a.Token),
		LifecycleActionResult: aws.String(string(result)),
	}
	backoff := wait.Backoff{Duration: minBackoff, Factor: 2, Jitter: 1, Cap: maxBackoff, Steps: math.MaxInt32}
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := c.api.CompleteLifecycleAction(callCtx, in)
		cancel()
		switch {
		case err == nil:
			c.metrics.completed.WithLabelValues(string(result), outcomeSuccess).Inc()
			log.Info("lifecycle action completed", "attempts", attempt)
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("completing the lifecycle action of %s with %s: %w (last error: %w)", a.InstanceID, result, ctx.Err(), err)
		case gone(err):
			c.metrics.completed.WithLabelValues(string(result), outcomeGone).Inc()
			log.Info("lifecycle action no longer active; treating it as done", "err", err, "attempts", attempt)
			return fmt.Errorf("completing the lifecycle action of %s with %s: %w: %w", a.InstanceID, result, ErrNoActiveAction, err)
		}
		c.metrics.completed.WithLabelValues(string(result), outcomeError).Inc()
		pause := backoff.Step()
		log.Warn("completing lifecycle action failed; retrying", "err", err, "attempt", attempt, "backoff", pause)
		select {
		case <-ctx.Done():
			return fmt.Errorf("completing the lifecycle action of %s with %s: %w (last error: %w)", a.InstanceID, result, ctx.Err(), err)
		case <-c.clock.After(pause):
		}
	}
}

// validate checks that a names an action: Auto Scaling answers
// ValidationError to an empty group or hook name, which would otherwise
// pass for an action that is gone.
func validate(a messages.LifecycleAction) error {
	switch {
	case a.GroupName == "":
		return errors.New("invalid lifecycle action: no Auto Scaling group name")
	case a.HookName == "":
		return errors.New("invalid lifecycle action: no lifecycle hook name")
	case a.InstanceID == "" && a.Token == "":
		return errors.New("invalid lifecycle action: neither an instance ID nor a token")
	}
	return nil
}

// gone says whether err is Auto Scaling's answer for an action that is no
// longer active.
func gone(err error) bool {
	apiErr, ok := errors.AsType[smithy.APIError](err)
	return ok && apiErr.ErrorCode() == "ValidationError"
}

// optional returns nil for an empty string: the instance ID and the token
// are optional (one of them is enough).
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// attrs are the log attributes naming a.
func attrs(a messages.LifecycleAction) []any {
	return []any{"instance", a.InstanceID, "group", a.GroupName, "hook", a.HookName,
		"transition", a.Transition, "token", a.Token}
}
