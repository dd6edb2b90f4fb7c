package aemm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lastcall/lastcall/test/emulators/child"
	"github.com/lastcall/lastcall/test/tools"
)

// Never, as MockDelay, RebalanceDelay or ASGTerminationDelay, keeps that
// signal away for the server's whole life (Start sets its trigger time in
// 2099).
const Never time.Duration = -1

const (
	// startTimeout bounds waiting for the server when ctx has no deadline.
	startTimeout = 30 * time.Second
	// portAttempts is how many free ports Start tries: another process may
	// take the port between choosing it and AEMM binding it.
	portAttempts = 3
	// spotLead is how long after the notice the pinned default spot time is.
	spotLead = 2 * time.Minute
)

// neverTime is the trigger time that stands for Never.
func neverTime() time.Time { return time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC) }

// The subcommands of AEMM that Config.Subcommand accepts.
const (
	SubcommandAll          = ""
	SubcommandSpot         = "spot"
	SubcommandEvents       = "events"
	SubcommandASGLifecycle = "asglifecycle"
)

// Config says what the server answers. Zero fields take AEMM's defaults
// unless noted. Every time must be on a whole second (see the package doc).
type Config struct {
	// InstanceID is served at meta-data/instance-id.
	InstanceID string
	// SpotAction is the spot notice's action: terminate (AEMM's default),
	// stop or hibernate.
	SpotAction string
	// SpotTime is the spot notice's "time". Zero pins it to the moment the
	// notice appears (MockTriggerTime, or Start's time) plus two minutes.
	SpotTime time.Time
	// MockTriggerTime is when the spot notice and the scheduled events
	// appear. Zero: MockDelay decides.
	MockTriggerTime time.Time
	// MockDelay delays the spot notice and the scheduled events, counted in
	// whole seconds from AEMM's start. Zero: served at once. Never: never.
	MockDelay time.Duration
	// RebalanceTriggerTime is when the rebalance recommendation appears.
	// Zero: RebalanceDelay decides.
	RebalanceTriggerTime time.Time
	// RebalanceDelay delays the rebalance recommendation like MockDelay.
	// Zero: served at once. Never: never.
	RebalanceDelay time.Duration
	// RebalanceNoticeTime is the recommendation's "noticeTime". Zero pins it
	// to RebalanceTriggerTime, or to Start's time.
	RebalanceNoticeTime time.Time
	// ASGTerminationTriggerTime is when target-lifecycle-state turns from
	// InService to Terminated. Zero: ASGTerminationDelay decides.
	ASGTerminationTriggerTime time.Time
	// ASGTerminationDelay delays Terminated like MockDelay. Zero:
	// Terminated at once. Never: InService forever.
	ASGTerminationDelay time.Duration
	// Events, if set, configures the one scheduled event AEMM serves; nil
	// leaves AEMM's default (system-reboot, active, not before AEMM's start).
	Events *ScheduledEvent
	// IMDSv2Only makes every metadata path require a session token.
	IMDSv2Only bool
	// Subcommand restricts the server to one group of paths: one of the
	// Subcommand constants.
	Subcommand string
	// ExtraArgs are appended to the command line; flags there win over the
	// config file.
	ExtraArgs []string
}

// ScheduledEvent is the scheduled maintenance event AEMM serves at
// meta-data/events/maintenance/scheduled.
type ScheduledEvent struct {
	// EventID is the event's EventId (AEMM's default:
	// instance-event-1234567890abcdef0).
	EventID string
	// Code is instance-reboot, system-reboot (AEMM's default),
	// system-maintenance, instance-retirement or instance-stop.
	Code string
	// State is active (AEMM's default), completed or canceled.
	State string
	// NotBefore, NotAfter and NotBeforeDeadline are the event's window.
	// Zero: AEMM's start, plus 0, 7 and 9 days.
	NotBefore         time.Time
	NotAfter          time.Time
	NotBeforeDeadline time.Time
}

// Server is a running AEMM: URL, LogPath and Stop come from child.Server.
type Server struct {
	*child.Server
	cfg Config
}

// TriggerAfter returns the first whole second at least d from now: a
// trigger time AEMM honours exactly.
func TriggerAfter(d time.Duration) time.Time {
	t := time.Now().Add(d)
	if tt := t.Truncate(time.Second); !tt.Equal(t) {
		t = tt.Add(time.Second)
	}
	return t.UTC()
}

// Start builds (or finds in the cache) AEMM and runs it with cfg on a free
// port of 127.0.0.1. It returns once the server answers HTTP. ctx bounds
// the build and the start only; the server runs until Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	bin, err := tools.Binary(ctx, tools.AEMM, "ec2-metadata-mock")
	if err != nil {
		return nil, fmt.Errorf("building amazon-ec2-metadata-mock: %w", err)
	}
	dir, err := os.MkdirTemp("", "aemm-")
	if err != nil {
		return nil, fmt.Errorf("creating the AEMM directory: %w", err)
	}
	cfg = cfg.pinned(time.Now())
	cfgPath := filepath.Join(dir, "config.json")
	b, err := json.MarshalIndent(cfg.fileConfig(), "", "  ")
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("encoding the AEMM config: %w", err)
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("writing the AEMM config: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	var errs []error
	for attempt := range portAttempts {
		s, retry, err := start(ctx, bin, dir, cfgPath, attempt, cfg)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if !retry || ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("starting amazon-ec2-metadata-mock: %w", errors.Join(errs...))
}

// start runs AEMM once. retry says whether another port may help.
func start(ctx context.Context, bin, dir, cfgPath string, attempt int, cfg Config) (s *Server, retry bool, err error) {
	port, err := child.FreePort()
	if err != nil {
		return nil, false, err
	}
	args := []string{}
	if cfg.Subcommand != "" {
		args = append(args, cfg.Subcommand)
	}
	args = append(args, "-n", child.Localhost, "-p", strconv.Itoa(port), "-c", cfgPath)
	args = append(args, cfg.ExtraArgs...)
	srv, err := child.Start(ctx, child.Spec{
		Bin: bin, Args: args, Env: childEnv(dir), Dir: dir,
		LogPath: filepath.Join(dir, fmt.Sprintf("aemm-%d.log", attempt)),
		URL:     "http://" + net.JoinHostPort(child.Localhost, strconv.Itoa(port)), ReadyPath: "/latest/meta-data/instance-id",
	})
	if err != nil {
		return nil, strings.Contains(err.Error(), "address already in use"), err
	}
	return &Server{Server: srv, cfg: cfg}, false, nil
}

// Config is the configuration the server runs with, pinned times filled in.
func (s *Server) Config() Config { return s.cfg }

func (c Config) validate() error {
	switch c.Subcommand {
	case SubcommandAll, SubcommandSpot, SubcommandEvents, SubcommandASGLifecycle:
	default:
		return fmt.Errorf("aemm: unknown subcommand %q", c.Subcommand)
	}
	times := map[string]time.Time{
		"SpotTime":                  c.SpotTime,
		"MockTriggerTime":           c.MockTriggerTime,
		"RebalanceTriggerTime":      c.RebalanceTriggerTime,
		"RebalanceNoticeTime":       c.RebalanceNoticeTime,
		"ASGTerminationTriggerTime": c.ASGTerminationTriggerTime,
	}
	if e := c.Events; e != nil {
		times["Events.NotBefore"] = e.NotBefore
		times["Events.NotAfter"] = e.NotAfter
		times["Events.NotBeforeDeadline"] = e.NotBeforeDeadline
	}
	for name, t := range times {
		if !t.Equal(t.Truncate(time.Second)) {
			return fmt.Errorf("aemm: %s %s is not on a whole second; AEMM would round it down (use TriggerAfter)",
				name, t.Format(time.RFC3339Nano))
		}
	}
	delays := map[string]time.Duration{
		"MockDelay":           c.MockDelay,
		"RebalanceDelay":      c.RebalanceDelay,
		"ASGTerminationDelay": c.ASGTerminationDelay,
	}
	for name, d := range delays {
		if d != Never && (d < 0 || d%time.Second != 0) {
			return fmt.Errorf("aemm: %s %s is not a whole, non-negative number of seconds", name, d)
		}
	}
	return nil
}

// pinned fills in the values AEMM would otherwise derive from each
// request's time, and turns Never into trigger times.
func (c Config) pinned(now time.Time) Config {
	now = now.Truncate(time.Second).UTC()
	if c.MockDelay == Never && c.MockTriggerTime.IsZero() {
		c.MockTriggerTime, c.MockDelay = neverTime(), 0
	}
	if c.RebalanceDelay == Never && c.RebalanceTriggerTime.IsZero() {
		c.RebalanceTriggerTime, c.RebalanceDelay = neverTime(), 0
	}
	if c.ASGTerminationDelay == Never && c.ASGTerminationTriggerTime.IsZero() {
		c.ASGTerminationTriggerTime, c.ASGTerminationDelay = neverTime(), 0
	}
	if c.SpotTime.IsZero() {
		at := now.Add(c.MockDelay)
		if !c.MockTriggerTime.IsZero() {
			at = c.MockTriggerTime
		}
		c.SpotTime = at.Add(spotLead).UTC()
	}
	if c.RebalanceNoticeTime.IsZero() {
		c.RebalanceNoticeTime = now.Add(c.RebalanceDelay)
		if !c.RebalanceTriggerTime.IsZero() {
			c.RebalanceNoticeTime = c.RebalanceTriggerTime.UTC()
		}
	}
	return c
}

// fileConfig is the -c config file: AEMM's keys (viper, dash-separated).
func (c Config) fileConfig() map[string]any {
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	m := map[string]any{
		"imdsv2":                    c.IMDSv2Only,
		"mock-delay-sec":            int64(c.MockDelay / time.Second),
		"rebalance-delay-sec":       int64(c.RebalanceDelay / time.Second),
		"asg-termination-delay-sec": int64(c.ASGTerminationDelay / time.Second),
	}
	setTime := func(m map[string]any, key string, t time.Time) {
		if !t.IsZero() {
			m[key] = rfc(t)
		}
	}
	setTime(m, "mock-trigger-time", c.MockTriggerTime)
	setTime(m, "rebalance-trigger-time", c.RebalanceTriggerTime)
	setTime(m, "asg-termination-trigger-time", c.ASGTerminationTriggerTime)

	spot := map[string]any{}
	if c.SpotAction != "" {
		spot["action"] = c.SpotAction
	}
	setTime(spot, "time", c.SpotTime)
	setTime(spot, "rebalance-rec-time", c.RebalanceNoticeTime)
	m["spot"] = spot

	values := map[string]any{}
	if c.InstanceID != "" {
		values["instance-id"] = c.InstanceID
	}
	if e := c.Events; e != nil {
		events := map[string]any{}
		if e.Code != "" {
			events["code"] = e.Code
		}
		if e.State != "" {
			events["state"] = e.State
		}
		setTime(events, "not-before", e.NotBefore)
		setTime(events, "not-after", e.NotAfter)
		setTime(events, "not-before-deadline", e.NotBeforeDeadline)
		m["events"] = events
		if e.EventID != "" {
			values["event-id"] = e.EventID
		}
	}
	if len(values) > 0 {
		m["metadata"] = map[string]any{"values": values}
	}
	return m
}

// childEnv is the environment without AEMM_* (viper reads them) and with
// HOME set to dir (AEMM reads $HOME/aemm-config.json).
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AEMM_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir)
}
