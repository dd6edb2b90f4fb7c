// Package gce watches the GCE metadata server for the two notices that
// take a VM away: instance/preempted (a preemptible or spot VM being
// preempted) and instance/maintenance-event (host maintenance that stops or
// live-migrates the VM).
//
// The metadata server is long-polled, not polled: each source subscribes
// with cloud.google.com/go/compute/metadata's Client.SubscribeWithContext,
// which reads the value once and then asks again with wait_for_change=true
// and the last ETag, so that a change between two answers is never missed.
// The library hides errors inside a subscription (it sleeps 5 s and asks
// again, without telling anyone), so each source also runs a watchdog: with
// timeout_sec on every long poll, an answer is due at least every
// LongPollTimeout, and a subscription that stays silent longer is cancelled,
// probed with a plain read to learn why, reported to the HealthReporter and
// restarted after a capped backoff.
package gce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// The names of the sources Sources returns.
const (
	NamePreempted   = "gce-preempted"
	NameMaintenance = "gce-maintenance-event"
)

// The metadata paths the sources watch.
const (
	pathPreempted   = "instance/preempted"
	pathMaintenance = "instance/maintenance-event"
)

// Defaults for zero Options fields.
const (
	// DefaultSpotDeadline is GCE's 30 s between the preemption notice and
	// the VM being stopped.
	DefaultSpotDeadline = 30 * time.Second
	// DefaultMaintenanceDeadline is GCE's 60 s of notice before host
	// maintenance stops the VM.
	DefaultMaintenanceDeadline = 60 * time.Second
	// DefaultLongPollTimeout is the timeout_sec of each long poll.
	DefaultLongPollTimeout = 60 * time.Second
)

const (
	// minBackoff and maxBackoff bound the wait after failed reads: 1 s,
	// doubling to 10 s.
	minBackoff = time.Second
	maxBackoff = 10 * time.Second
	// readTimeout bounds one plain (not long-polled) read.
	readTimeout = 10 * time.Second
	// stallGrace is how much longer than LongPollTimeout a subscription
	// may stay silent before the watchdog cancels it. It covers the
	// library's own retries of 5xx answers (about 3 s at most).
	stallGrace = 3 * time.Second
)

// Options configures the GCE sources.
type Options struct {
	// MaintenanceDeadline is how long after a TERMINATE_ON_HOST_MAINTENANCE
	// notice is first seen the VM is expected to stop; zero means
	// DefaultMaintenanceDeadline.
	MaintenanceDeadline time.Duration
	// SpotDeadline is how long after a preemption notice is first seen the
	// VM is expected to stop; zero means DefaultSpotDeadline.
	SpotDeadline time.Duration
	// LongPollTimeout is the timeout_sec of every long poll, rounded up to
	// whole seconds; zero means DefaultLongPollTimeout. The metadata
	// client's HTTP client must not time out sooner.
	LongPollTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.MaintenanceDeadline < 0 || o.SpotDeadline < 0 || o.LongPollTimeout < 0 {
		return o, errors.New("gce: negative durations in options")
	}
	if o.MaintenanceDeadline == 0 {
		o.MaintenanceDeadline = DefaultMaintenanceDeadline
	}
	if o.SpotDeadline == 0 {
		o.SpotDeadline = DefaultSpotDeadline
	}
	if o.LongPollTimeout == 0 {
		o.LongPollTimeout = DefaultLongPollTimeout
	}
	if r := o.LongPollTimeout % time.Second; r != 0 {
		o.LongPollTimeout += time.Second - r
	}
	return o, nil
}

// Sources returns the sources gce-preempted and gce-maintenance-event,
// reading through client. Build client with metadata.NewWithOptions
// (&metadata.Options{}) or an HTTP client without a timeout shorter than
// Options.LongPollTimeout: the library long-polls with that client. health
// and log may be nil; clk nil means the real clock.
func Sources(client *metadata.Client, o Options, health interruption.HealthReporter, log *slog.Logger, clk clock.Clock) ([]interruption.Source, error) {
	if client == nil {
		return nil, errors.New("gce: nil metadata client")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if health == nil {
		health = interruption.DiscardHealth{}
	}
	if log == nil {
		log = slog.Default()
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	mk := func(name, path string, lead time.Duration, parse parseFunc) *source {
		return &source{
			name: name, path: path, lead: lead, parse: parse,
			client: client, pollTimeout: o.LongPollTimeout,
			health: health, log: log.With("source", name), clk: clk,
		}
	}
	return []interruption.Source{
		mk(NamePreempted, pathPreempted, o.SpotDeadline, parsePreempted),
		mk(NameMaintenance, pathMaintenance, o.MaintenanceDeadline, parseMaintenance),
	}, nil
}

// parseFunc turns one value of a watched path into events. active is the
// last drain or notify event the source sent and has not cancelled, or nil.
// A drain event with no Deadline gets first-seen plus the source's lead.
type parseFunc func(value string, in Instance, active *interruption.Event) ([]interruption.Event, error)

// source watches one metadata path. It implements interruption.Source.
type source struct {
	name        string
	path        string
	lead        time.Duration
	parse       parseFunc
	client      *metadata.Client
	pollTimeout time.Duration
	health      interruption.HealthReporter
	log         *slog.Logger
	clk         clock.Clock
}

// Name implements interruption.Source.
func (s *source) Name() string { return s.name }

// run is the state of one Run.
type run struct {
	*source
	out      chan<- interruption.Event
	inst     *Instance
	sent     interruption.Dedup
	active   *interruption.Event
	failures int
	backoff  wait.Backoff
}

// Run implements interruption.Source. It returns ctx.Err() as soon as ctx
// ends; a subscription goroutine of the library may outlive it by up to the
// library's 5 s error sleep, and then ends without sending anything.
func (s *source) Run(ctx context.Context, out chan<- interruption.Event) error {
	r := &run{source: s, out: out, sent: interruption.Dedup{}, backoff: interruption.NewBackoff(minBackoff, maxBackoff)}
	for {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.failures++
		reason := interruption.ReasonOf(err)
		s.health.Failure(s.name, string(reason), err)
		wait := r.backoff.Step()
		s.log.Warn("reading signal failed", "reason", reason, "err", err, "consecutive", r.failures, "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clk.After(wait):
		}
	}
}

// watch subscribes to the path and handles every answer until the
// subscription fails or ctx ends; it returns why.
func (r *run) watch(ctx context.Context) error {
	if r.inst == nil {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		inst, err := Identity(rctx, r.client)
		cancel()
		if err != nil {
			return fmt.Errorf("reading the instance's identity: %w", err)
		}
		r.inst = &inst
	}

	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	values := make(chan string)
	errc := make(chan error, 1)
	suffix := r.path + "?timeout_sec=" + strconv.Itoa(int(r.pollTimeout/time.Second))
	go func() {
		// The library reads the value once, calls fn, then long-polls with
		// wait_for_change=true&last_etag=<the last ETag>.
		errc <- r.client.SubscribeWithContext(subCtx, suffix, func(ctx context.Context, v string, ok bool) error {
			if !ok {
				return metadata.NotDefinedError(r.path)
			}
			select {
			case values <- v:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	stallAfter := r.pollTimeout + stallGrace
	stall := r.clk.NewTimer(stallAfter)
	defer stall.Stop()
	for {
		select {
		case v := <-values:
			if err := r.answer(ctx, v); err != nil {
				return err
			}
			stall.Reset(stallAfter)
		case err := <-errc:
			if err == nil {
				err = errors.New("subscription ended")
			}
			return classify(fmt.Errorf("long-polling %s: %w", r.path, err))
		case <-stall.C():
			// The library retries failed long polls silently: stop it and
			// find out why with a plain read.
			cancel()
			rctx, cancelRead := context.WithTimeout(ctx, readTimeout)
			_, err := r.client.GetWithContext(rctx, r.path)
			cancelRead()
			if err != nil {
				return classify(fmt.Errorf("reading %s: %w", r.path, err))
			}
			return &interruption.ReadError{
				Reason: interruption.ReasonTimeout,
				Err:    fmt.Errorf("long poll of %s gave no answer in %v", r.path, stallAfter),
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// answer handles one value read from the path: it sends each new (ID,
// Action), then reports the read. It returns only ctx's error.
func (r *run) answer(ctx context.Context, value string) error {
	events, err := r.parse(strings.TrimSpace(value), *r.inst, r.active)
	if err != nil {
		// A value we cannot read is counted and logged; the subscription
		// goes on, and the next change may be one we understand.
		err = interruption.Malformed(err)
		r.health.Failure(r.name, string(interruption.ReasonMalformed), err)
		r.log.Warn("signal malformed", "path", r.path, "err", err)
		return nil
	}
	if r.failures > 0 {
		r.log.Info("reading signal recovered", "after_failures", r.failures)
		r.failures, r.backoff = 0, interruption.NewBackoff(minBackoff, maxBackoff)
	}
	now := r.clk.Now()
	for _, e := range events {
		if !r.sent.Fresh(e) {
			continue
		}
		e.Source = r.name
		e.Observed = now
		if e.Action == interruption.ActionDrain && e.Deadline.IsZero() {
			e.Deadline = now.Add(r.lead)
		}
		switch {
		case e.Action != interruption.ActionCancel:
			active := e
			r.active = &active
		case r.active != nil && r.active.ID == e.ID:
			r.active = nil
		}
		r.log.Info("interruption notice", "id", e.ID, "kind", e.Kind, "action", e.Action, "deadline", e.Deadline)
		select {
		case r.out <- e:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Reported after the events are sent: a consumer that waits for every
	// source's first read then has its notices.
	r.health.Success(r.name)
	return nil
}

// classify gives the library's HTTP errors (a status other than 200, or 404
// as NotDefinedError) the reason http_error; network errors keep theirs
// (interruption.ReasonOf reads them).
func classify(err error) error {
	var he *metadata.Error
	if errors.As(err, &he) || isNotDefined(err) {
		return &interruption.ReadError{Reason: interruption.ReasonHTTP, Err: err}
	}
	return err
}

func isNotDefined(err error) bool {
	var nd metadata.NotDefinedError
	return errors.As(err, &nd)
}
