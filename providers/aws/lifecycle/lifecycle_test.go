package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/messages"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// motoURL is the moto_server the tests share, started by TestMain; each
// test makes its own group and proxy.
var motoURL string

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := moto.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting moto_server:", err)
		os.Exit(1)
	}
	motoURL = s.URL()
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

const (
	hook        = "drain"
	terminating = "autoscaling:EC2_INSTANCE_TERMINATING"
	// interval is the heartbeat interval of the tests on the real clock.
	interval = 50 * time.Millisecond
	// waitFor bounds waiting for something to happen.
	waitFor = 20 * time.Second
)

// env is a group of one instance in moto with an active terminate action
// registered with a LifecycleProxy, a real Auto Scaling client through the
// proxy, and a Completer using it.
type env struct {
	proxy  *moto.LifecycleProxy
	api    *autoscaling.Client
	reg    *prometheus.Registry
	action messages.LifecycleAction
	c      *lifecycle.Completer
}

// newEnv builds an env whose Completer reads time from clk.
func newEnv(t *testing.T, clk clock.WithTicker) *env {
	t.Helper()
	// Unique to this run of the test too: go test -count=N runs it again
	// against the same server.
	group := fmt.Sprintf("%s-%08x",
		strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9-]+`).ReplaceAllString(t.Name(), "-")), rand.Uint32())
	ids, err := moto.CreateGroup(ctx(t), moto.Config(motoURL), moto.Group{
		Name:  group,
		Hooks: []moto.Hook{{Name: hook, HeartbeatTimeout: 300 * time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := moto.NewLifecycleProxy(motoURL)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	a := messages.LifecycleAction{GroupName: group, HookName: hook, InstanceID: ids[0], Transition: terminating}
	a.Token = p.Register(moto.LifecycleActionState{
		GroupName: a.GroupName, HookName: a.HookName, InstanceID: a.InstanceID, Transition: a.Transition,
		HeartbeatTimeout: 300 * time.Second,
	})
	// The real client with the SDK's standard retryer (3 attempts); only
	// its backoff is capped, to keep the tests short.
	api := autoscaling.NewFromConfig(moto.Config(p.URL()), func(o *autoscaling.Options) {
		o.Retryer = retry.AddWithMaxBackoffDelay(retry.NewStandard(), 20*time.Millisecond)
	})
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &env{proxy: p, api: api, reg: reg, action: a,
		c: lifecycle.NewCompleter(api, reg, log, clk, interval)}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// calls counts the proxy's answers to action.
func (e *env) calls(action string) int {
	n := 0
	for _, c := range e.proxy.Calls() {
		if c.Action == action {
			n++
		}
	}
	return n
}

// metric returns the value of the counter name with labels.
func (e *env) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func (e *env) wantMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := e.metric(t, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

const (
	heartbeats = "lastcall_lifecycle_heartbeats_total"
	completed  = "lastcall_lifecycle_actions_completed_total"
)

// keepAlive runs KeepAlive in the background; the channel gets its error.
func (e *env) keepAlive(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- e.c.KeepAlive(ctx, e.action) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitFor):
		t.Fatal("KeepAlive did not return")
		return nil
	}
}

// TestKeepAliveUntilCompletedElsewhere: heartbeats on the interval, then
// ErrNoActiveAction once someone else completes the action.
func TestKeepAliveUntilCompletedElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	done := e.keepAlive(ctx(t))

	eventually(t, "3 heartbeats", func() bool { return e.proxy.Heartbeats(e.action.InstanceID) >= 3 })
	for _, c := range e.proxy.Calls() {
		if c.Token != e.action.Token || c.GroupName != e.action.GroupName || c.HookName != hook {
			t.Fatalf("heartbeat %+v does not name the action %+v", c, e.action)
		}
	}

	// Another processor completes the action.
	if _, err := e.api.CompleteLifecycleAction(ctx(t), &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(e.action.GroupName),
		LifecycleHookName:     aws.String(hook),
		InstanceId:            aws.String(e.action.InstanceID),
		LifecycleActionResult: aws.String("CONTINUE"),
	}); err != nil {
		t.Fatal(err)
	}
	err := wait(t, done)
	if !errors.Is(err, lifecycle.ErrNoActiveAction) {
		t.Fatalf("KeepAlive = %v, want ErrNoActiveAction", err)
	}
	if apiErr, ok := errors.AsType[smithy.APIError](err); !ok || apiErr.ErrorCode() != "ValidationError" {
		t.Errorf("KeepAlive's error %v does not wrap the ValidationError", err)
	}
	sent := e.proxy.Heartbeats(e.action.InstanceID)
	e.wantMetric(t, heartbeats, map[string]string{"outcome": "success"}, float64(sent))
	e.wantMetric(t, heartbeats, map[string]string{"outcome": "gone"}, 1)
	e.wantMetric(t, heartbeats, map[string]string{"outcome": "error"}, 0)
}

// TestKeepAliveTicks checks the schedule with a fake clock: one heartbeat
// at once, one per interval, none in between, and nil when ctx ends.
func TestKeepAliveTicks(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	e := newEnv(t, clk)
	kctx, cancel := context.WithCancel(ctx(t))
	done := e.keepAlive(kctx)
	inst := e.action.InstanceID

	eventually(t, "the first heartbeat, before any tick", func() bool { return e.proxy.Heartbeats(inst) == 1 })
	for i := 2; i <= 4; i++ {
		eventually(t, "KeepAlive to wait for its ticker", clk.HasWaiters)
		clk.Step(interval / 2)
		if n := e.proxy.Heartbeats(inst); n != i-1 {
			t.Fatalf("%d heartbeats half an interval later, want %d", n, i-1)
		}
		clk.Step(interval / 2)
		eventually(t, fmt.Sprintf("heartbeat %d", i), func() bool { return e.proxy.Heartbeats(inst) == i })
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("KeepAlive after cancel = %v, want nil", err)
	}
}

// TestKeepAliveSurvivesErrors: a heartbeat failing after the SDK's retries
// is counted, and retried at the next tick, not before.
func TestKeepAliveSurvivesErrors(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	e := newEnv(t, clk)
	inst := e.action.InstanceID
	// 3 faults: all of the SDK's attempts for the first heartbeat; then 1
	// Throttling, which the SDK retries within the second.
	e.proxy.FailNext(moto.ActionRecordLifecycleActionHeartbeat, http.StatusInternalServerError, "InternalFailure", 3)
	e.proxy.FailNext(moto.ActionRecordLifecycleActionHeartbeat, http.StatusBadRequest, "Throttling", 1)
	kctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	done := e.keepAlive(kctx)

	eventually(t, "the first heartbeat to fail", func() bool {
		return e.metric(t, heartbeats, map[string]string{"outcome": "error"}) == 1
	})
	eventually(t, "KeepAlive to wait for its ticker", clk.HasWaiters)
	// No tight loop: nothing more until the next tick.
	time.Sleep(100 * time.Millisecond)
	if n := e.calls(moto.ActionRecordLifecycleActionHeartbeat); n != 3 {
		t.Fatalf("%d heartbeat calls before the next tick, want 3 (the SDK's attempts)", n)
	}
	clk.Step(interval)
	eventually(t, "a heartbeat to succeed", func() bool { return e.proxy.Heartbeats(inst) == 1 })
	if n := e.calls(moto.ActionRecordLifecycleActionHeartbeat); n != 5 {
		t.Fatalf("%d heartbeat calls, want 5", n)
	}
	// The proxy counts a heartbeat before the Completer has its answer.
	eventually(t, "the heartbeat to be counted", func() bool {
		return e.metric(t, heartbeats, map[string]string{"outcome": "success"}) == 1
	})
	e.wantMetric(t, heartbeats, map[string]string{"outcome": "error"}, 1)
	select {
	case err := <-done:
		t.Fatalf("KeepAlive returned %v after a transient failure", err)
	default:
	}
}

func TestCompleteContinue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	if err := e.c.Complete(ctx(t), e.action, lifecycle.Continue); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	c, ok := e.proxy.Completion(e.action.InstanceID)
	if !ok || c.Result != "CONTINUE" || c.Token != e.action.Token || c.Source != moto.SourceAPI {
		t.Fatalf("Completion = %+v, %v", c, ok)
	}
	calls := e.proxy.Calls()
	if len(calls) != 1 || calls[0].Token != e.action.Token || calls[0].InstanceID != e.action.InstanceID {
		t.Fatalf("calls %+v", calls)
	}
	e.wantMetric(t, completed, map[string]string{"result": "CONTINUE", "outcome": "success"}, 1)

	// Twice: the action is gone.
	err := e.c.Complete(ctx(t), e.action, lifecycle.Continue)
	if !errors.Is(err, lifecycle.ErrNoActiveAction) {
		t.Fatalf("second Complete = %v, want ErrNoActiveAction", err)
	}
	if n := e.calls(moto.ActionCompleteLifecycleAction); n != 2 {
		t.Fatalf("%d Complete calls, want 2 (a ValidationError is not retried)", n)
	}
	e.wantMetric(t, completed, map[string]string{"result": "CONTINUE", "outcome": "gone"}, 1)
	e.wantMetric(t, completed, map[string]string{"result": "CONTINUE", "outcome": "error"}, 0)

	// A heartbeat for a completed action stops at once.
	if err := e.c.KeepAlive(ctx(t), e.action); !errors.Is(err, lifecycle.ErrNoActiveAction) {
		t.Fatalf("KeepAlive after Complete = %v, want ErrNoActiveAction", err)
	}
}

func TestCompleteAbandon(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	if err := e.c.Complete(ctx(t), e.action, lifecycle.Abandon); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if r, ok := e.proxy.Completed(e.action.InstanceID); !ok || r != "ABANDON" {
		t.Fatalf("Completed = %q, %v", r, ok)
	}
	e.wantMetric(t, completed, map[string]string{"result": "ABANDON", "outcome": "success"}, 1)
}

func TestCompleteWrongToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	a := e.action
	a.Token = "00000000-0000-4000-8000-000000000000"
	if err := e.c.Complete(ctx(t), a, lifecycle.Continue); !errors.Is(err, lifecycle.ErrNoActiveAction) {
		t.Fatalf("Complete with a wrong token = %v, want ErrNoActiveAction", err)
	}
	if !e.proxy.Active(e.action.InstanceID) {
		t.Fatal("a wrong token completed the action")
	}
}

// TestCompleteRetriesBeyondSDK: 5 faults outlast the SDK's 3 attempts; the
// Completer's own backoff gets the action completed.
func TestCompleteRetriesBeyondSDK(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	e.proxy.FailNext(moto.ActionCompleteLifecycleAction, http.StatusInternalServerError, "InternalFailure", 5)
	start := time.Now()
	if err := e.c.Complete(ctx(t), e.action, lifecycle.Continue); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	t.Logf("completed after 5 faults in %v", time.Since(start))
	if n := e.calls(moto.ActionCompleteLifecycleAction); n != 6 {
		t.Fatalf("%d Complete calls, want 6", n)
	}
	if r, ok := e.proxy.Completed(e.action.InstanceID); !ok || r != "CONTINUE" {
		t.Fatalf("Completed = %q, %v", r, ok)
	}
	// Two Completer calls: the first failed (3 attempts), the second
	// succeeded at its third attempt.
	e.wantMetric(t, completed, map[string]string{"result": "CONTINUE", "outcome": "error"}, 1)
	e.wantMetric(t, completed, map[string]string{"result": "CONTINUE", "outcome": "success"}, 1)
}

// TestCompleteBackoff checks the Completer's waits with a fake clock: no
// call before the backoff passes, and the backoff grows.
func TestCompleteBackoff(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Now())
	e := newEnv(t, clk)
	// 2 SDK calls of 3 attempts each fail; the third succeeds.
	e.proxy.FailNext(moto.ActionCompleteLifecycleAction, http.StatusBadRequest, "Throttling", 6)
	done := make(chan error, 1)
	go func() { done <- e.c.Complete(ctx(t), e.action, lifecycle.Abandon) }()

	// The first wait is in [0.5 s, 1 s), the second in [1 s, 2 s).
	for i, wait := range []time.Duration{time.Second, 2 * time.Second} {
		eventually(t, "a backoff", func() bool {
			return e.calls(moto.ActionCompleteLifecycleAction) == 3*(i+1) && clk.HasWaiters()
		})
		clk.Step(wait/2 - time.Millisecond)
		time.Sleep(50 * time.Millisecond)
		if n := e.calls(moto.ActionCompleteLifecycleAction); n != 3*(i+1) {
			t.Fatalf("backoff %d: %d calls before half the backoff passed", i+1, n)
		}
		clk.Step(wait/2 + time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Complete: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Complete did not return")
	}
	if r, ok := e.proxy.Completed(e.action.InstanceID); !ok || r != "ABANDON" {
		t.Fatalf("Completed = %q, %v", r, ok)
	}
}

// TestCompleteStopsWithCtx: a failure that never clears is retried until
// ctx ends, and the error says both.
func TestCompleteStopsWithCtx(t *testing.T) {
	t.Parallel()
	e := newEnv(t, clock.RealClock{})
	e.proxy.FailNext(moto.ActionCompleteLifecycleAction, http.StatusBadRequest, "AccessDenied", 1000)
	c, cancel := context.WithTimeout(ctx(t), 1500*time.Millisecond)
	defer cancel()
	err := e.c.Complete(c, e.action, lifecycle.Continue)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, lifecycle.ErrNoActiveAction) {
		t.Fatalf("Complete = %v, want a deadline error", err)
	}
	if apiErr, ok := errors.AsType[smithy.APIError](err); !ok || apiErr.ErrorCode() != "AccessDenied" {
		t.Errorf("Complete's error %v does not wrap the last failure", err)
	}
	if n := e.calls(moto.ActionCompleteLifecycleAction); n < 2 || n > 10 {
		t.Errorf("%d Complete calls in 1.5 s, want a few", n)
	}
	if !e.proxy.Active(e.action.InstanceID) {
		t.Fatal("the action is no longer active")
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	c := lifecycle.NewCompleter(nil, nil, nil, nil, time.Second) // no call may reach the API
	a := messages.LifecycleAction{GroupName: "g", HookName: "h", InstanceID: "i-0123456789abcdef0"}
	if err := c.Complete(t.Context(), a, "MAYBE"); err == nil {
		t.Error("Complete with result MAYBE succeeded")
	}
	for _, bad := range []messages.LifecycleAction{
		{HookName: "h", InstanceID: "i-1"},
		{GroupName: "g", InstanceID: "i-1"},
		{GroupName: "g", HookName: "h"},
	} {
		if err := c.Complete(t.Context(), bad, lifecycle.Continue); err == nil || errors.Is(err, lifecycle.ErrNoActiveAction) {
			t.Errorf("Complete(%+v) = %v", bad, err)
		}
		if err := c.KeepAlive(t.Context(), bad); err == nil || errors.Is(err, lifecycle.ErrNoActiveAction) {
			t.Errorf("KeepAlive(%+v) = %v", bad, err)
		}
	}
}
