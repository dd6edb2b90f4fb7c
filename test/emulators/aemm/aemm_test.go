package aemm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/tools"
)

const (
	spotPath      = "/latest/meta-data/spot/instance-action"
	rebalancePath = "/latest/meta-data/events/recommendations/rebalance"
	eventsPath    = "/latest/meta-data/events/maintenance/scheduled"
	asgPath       = "/latest/meta-data/autoscaling/target-lifecycle-state"
	idPath        = "/latest/meta-data/instance-id"
)

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute) // a cold build takes a while
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// get returns the status and body of one request.
func get(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// binary makes sure AEMM is built, so that timing tests do not count the
// build.
func binary(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := tools.Binary(ctx, tools.AEMM, "ec2-metadata-mock"); err != nil {
		t.Fatal(err)
	}
}

// TestSpotNoticeAppearsAtTriggerTime checks the precision the benchmarks
// rely on: 404 on every request before T, the notice on every request from
// T on.
func TestSpotNoticeAppearsAtTriggerTime(t *testing.T) {
	t.Parallel()
	binary(t)
	trigger := TriggerAfter(2 * time.Second)
	s := startServer(t, Config{MockTriggerTime: trigger, SpotAction: "hibernate", Subcommand: SubcommandSpot})

	// Strictly: no request answered before T gets the notice, and no request
	// sent at or after T gets a 404.
	var lastMiss, firstHit time.Time
	var body string
	deadline := trigger.Add(5 * time.Second)
	for time.Now().Before(deadline) {
		sent := time.Now()
		code, b := get(t, s.URL()+spotPath, nil)
		answered := time.Now()
		switch code {
		case http.StatusNotFound:
			if !sent.Before(trigger) {
				t.Fatalf("404 for a request sent at %s, after the trigger %s", sent.Format(time.RFC3339Nano), trigger)
			}
			lastMiss = sent
		case http.StatusOK:
			if answered.Before(trigger) {
				t.Fatalf("notice answered at %s, before the trigger %s", answered.Format(time.RFC3339Nano), trigger)
			}
			if firstHit.IsZero() {
				firstHit, body = sent, b
			}
		default:
			t.Fatalf("status %d: %s", code, b)
		}
		if !firstHit.IsZero() && time.Since(firstHit) > 200*time.Millisecond {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if firstHit.IsZero() || lastMiss.IsZero() {
		t.Fatalf("no 404 then notice around the trigger %s (last 404 sent %s, first notice %s)", trigger, lastMiss, firstHit)
	}
	t.Logf("trigger %s: last 404 for a request sent %s before it, first notice for one sent %s after it",
		trigger.Format(time.RFC3339), trigger.Sub(lastMiss), firstHit.Sub(trigger))
	// The request that got the notice may have been sent a moment before T
	// and handled after it; with 5 ms polling it must be close to T.
	if d := firstHit.Sub(trigger); d < -50*time.Millisecond || d > 250*time.Millisecond {
		t.Errorf("first notice requested %s after the trigger, want within [-50ms, 250ms]", d)
	}
	var notice struct{ Action, Time string }
	if err := json.Unmarshal([]byte(body), &notice); err != nil {
		t.Fatalf("notice %q: %v", body, err)
	}
	wantTime := trigger.Add(2 * time.Minute).Format(time.RFC3339)
	if notice.Action != "hibernate" || notice.Time != wantTime {
		t.Errorf("notice = %+v, want hibernate at %s", notice, wantTime)
	}
	if got := s.Config().SpotTime.Format(time.RFC3339); got != wantTime {
		t.Errorf("Config().SpotTime = %s, want %s", got, wantTime)
	}
	// Subcommand spot serves no scheduled events.
	if code, _ := get(t, s.URL()+eventsPath, nil); code != http.StatusNotFound {
		t.Errorf("events with subcommand spot: status %d, want 404", code)
	}
}

// TestConfiguredValues is not parallel: it sets HOME and AEMM_* to check
// that AEMM ignores them.
func TestConfiguredValues(t *testing.T) {
	// AEMM must ignore the caller's $HOME/aemm-config.json and AEMM_*.
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "aemm-config.json"),
		[]byte(`{"metadata":{"values":{"instance-id":"i-from-home"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cache, err := tools.CacheDir() // which depends on HOME
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LASTCALL_CACHE_DIR", cache)
	t.Setenv("HOME", home)
	t.Setenv("AEMM_SPOT_ACTION", "stop")

	notBefore := time.Date(2030, 1, 5, 6, 7, 8, 0, time.FixedZone("CET", 3600))
	spotTime := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	s := startServer(t, Config{
		InstanceID:          "i-0123456789abcdef0",
		SpotTime:            spotTime,
		RebalanceDelay:      Never,
		ASGTerminationDelay: Never,
		Events: &ScheduledEvent{
			EventID:   "instance-event-0abc",
			Code:      "instance-stop",
			State:     "canceled",
			NotBefore: notBefore,
		},
	})

	if code, b := get(t, s.URL()+idPath, nil); code != http.StatusOK || b != "i-0123456789abcdef0" {
		t.Errorf("instance-id: %d %q", code, b)
	}
	for range 2 { // the time stays pinned across requests
		code, b := get(t, s.URL()+spotPath, nil)
		var n struct{ Action, Time string }
		if err := json.Unmarshal([]byte(b), &n); code != http.StatusOK || err != nil {
			t.Fatalf("spot: %d %q %v", code, b, err)
		}
		if n.Action != "terminate" || n.Time != "2031-02-03T04:05:06Z" {
			t.Errorf("spot notice = %+v", n)
		}
	}
	code, b := get(t, s.URL()+eventsPath, nil)
	var events []map[string]string
	if err := json.Unmarshal([]byte(b), &events); code != http.StatusOK || err != nil || len(events) != 1 {
		t.Fatalf("events: %d %q %v", code, b, err)
	}
	want := map[string]string{
		"Code":      "instance-stop",
		"State":     "canceled",
		"EventId":   "instance-event-0abc",
		"NotBefore": "5 Jan 2030 05:07:08 GMT", // in UTC, day not zero-padded
	}
	for k, v := range want {
		if events[0][k] != v {
			t.Errorf("event %s = %q, want %q (event %v)", k, events[0][k], v, events[0])
		}
	}
	if code, _ := get(t, s.URL()+rebalancePath, nil); code != http.StatusNotFound {
		t.Errorf("rebalance with Never: status %d, want 404", code)
	}
	if code, b := get(t, s.URL()+asgPath, nil); code != http.StatusOK || b != "InService" {
		t.Errorf("target-lifecycle-state with Never: %d %q", code, b)
	}
}

func TestRebalanceNoticeTimeIsPinned(t *testing.T) {
	t.Parallel()
	binary(t)
	trigger := TriggerAfter(time.Second)
	s := startServer(t, Config{RebalanceTriggerTime: trigger, Subcommand: SubcommandSpot})
	want := `"noticeTime": "` + trigger.Format(time.RFC3339) + `"`
	waitFor(t, s.URL()+rebalancePath, trigger.Add(5*time.Second), func(code int, body string) bool {
		return code == http.StatusOK
	})
	if time.Now().Before(trigger) {
		t.Errorf("rebalance recommendation served before its trigger %s", trigger)
	}
	for range 2 {
		if code, b := get(t, s.URL()+rebalancePath, nil); code != http.StatusOK || !strings.Contains(b, want) {
			t.Errorf("rebalance: %d %q, want %s", code, b, want)
		}
	}
}

func TestASGTerminationTriggerTime(t *testing.T) {
	t.Parallel()
	binary(t)
	trigger := TriggerAfter(2 * time.Second)
	s := startServer(t, Config{ASGTerminationTriggerTime: trigger, Subcommand: SubcommandASGLifecycle})
	if code, b := get(t, s.URL()+asgPath, nil); code != http.StatusOK || b != "InService" {
		t.Errorf("before the trigger: %d %q", code, b)
	}
	waitFor(t, s.URL()+asgPath, trigger.Add(5*time.Second), func(code int, body string) bool {
		return body == "Terminated"
	})
	if time.Now().Before(trigger) {
		t.Errorf("Terminated before the trigger %s", trigger)
	}
}

func TestIMDSv2Only(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{IMDSv2Only: true, InstanceID: "i-v2"})
	if code, _ := get(t, s.URL()+idPath, nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: status %d, want 401", code)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, s.URL()+"/latest/api/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token: status %d", resp.StatusCode)
	}
	h := http.Header{"X-Aws-Ec2-Metadata-Token": {string(token)}}
	if code, b := get(t, s.URL()+idPath, h); code != http.StatusOK || b != "i-v2" {
		t.Errorf("with a token: %d %q", code, b)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{})
	pid := s.PID()
	s.Stop()
	s.Stop() // idempotent
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still there after Stop: %v", pid, err)
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("directory %s still there after Stop: %v", s.Dir(), err)
	}
	if _, err := http.Get(s.URL()); err == nil {
		t.Errorf("server still answers after Stop")
	}
}

func TestInvalidConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"fractional trigger": {MockTriggerTime: time.Date(2030, 1, 1, 0, 0, 0, 5e8, time.UTC)},
		"fractional delay":   {MockDelay: 1500 * time.Millisecond},
		"negative delay":     {RebalanceDelay: -2 * time.Second},
		"subcommand":         {Subcommand: "nope"},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := Start(t.Context(), cfg); err == nil {
				s.Stop()
				t.Fatal("Start succeeded, want an error")
			}
		})
	}
}

// waitFor polls url until ok says so, failing the test at deadline.
func waitFor(t *testing.T, url string, deadline time.Time, ok func(code int, body string) bool) {
	t.Helper()
	for {
		code, b := get(t, url, nil)
		if ok(code, b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d %q at the deadline", url, code, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDelays checks that the relative delays reach AEMM through the config
// file: nothing at first, the notices within about a second of the delay.
func TestDelays(t *testing.T) {
	t.Parallel()
	// 3 s: AEMM counts from its own start, up to a second before Start
	// returns, and Start itself may be slow on a loaded machine.
	s := startServer(t, Config{MockDelay: 3 * time.Second, ASGTerminationDelay: 3 * time.Second, RebalanceDelay: 3 * time.Second})
	started := time.Now()
	for _, p := range []string{spotPath, eventsPath, rebalancePath} {
		if code, _ := get(t, s.URL()+p, nil); code != http.StatusNotFound {
			t.Errorf("%s right after Start: status %d, want 404", p, code)
		}
	}
	if code, b := get(t, s.URL()+asgPath, nil); b != "InService" {
		t.Errorf("target-lifecycle-state right after Start: %d %q", code, b)
	}
	deadline := started.Add(5 * time.Second)
	for _, p := range []string{spotPath, eventsPath, rebalancePath} {
		waitFor(t, s.URL()+p, deadline, func(code int, _ string) bool { return code == http.StatusOK })
	}
	waitFor(t, s.URL()+asgPath, deadline, func(_ int, b string) bool { return b == "Terminated" })
	if d := time.Since(started); d < time.Second {
		t.Errorf("notices served %s after Start, want about 3 s", d)
	}
}
