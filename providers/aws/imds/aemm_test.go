package imds

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// These tests run the sources against the real amazon-ec2-metadata-mock.

var update = flag.Bool("update", false, "rewrite the testdata/*/aemm* payloads from amazon-ec2-metadata-mock")

// checkEvent compares the fields a source sets.
func checkEvent(t *testing.T, got, want interruption.Event) {
	t.Helper()
	if got.ID != want.ID || got.Source != want.Source || got.Kind != want.Kind ||
		got.Action != want.Action || !got.Deadline.Equal(want.Deadline) {
		t.Errorf("event:\n got  %+v\n want %+v", got, want)
	}
	if got.Observed.IsZero() || got.Detail == "" {
		t.Errorf("event without Observed or Detail: %+v", got)
	}
}

func TestSpotInterruption(t *testing.T) {
	t.Parallel()
	trigger := aemm.TriggerAfter(time.Second)
	spotTime := trigger.Add(2 * time.Minute)
	s := startAEMM(t, aemm.Config{
		MockTriggerTime: trigger,
		SpotTime:        spotTime,
		SpotAction:      "stop",
		IMDSv2Only:      true,
	})
	health := newRecordingHealth()
	out := run(t, sourcesFor(t, s.URL(), Options{Signals: []string{SignalSpot}}, health))

	// Before the trigger: 404, which is no notice and a healthy read.
	health.WaitFor(t, "success before the notice", 0, 1, success("imds-spot"))
	e := next(t, out)
	if e.Observed.Before(trigger) {
		t.Errorf("observed at %s, before the trigger %s", e.Observed, trigger)
	}
	checkEvent(t, e, interruption.Event{
		ID:       interruption.NewID(interruption.KindSpotInterruption, "stop", spotTime.Format(time.RFC3339)),
		Source:   "imds-spot",
		Kind:     interruption.KindSpotInterruption,
		Action:   interruption.ActionDrain,
		Deadline: spotTime,
	})
	// The same notice on every later poll is not sent again.
	quiet(t, out, 10*pollInterval)
	if n, _ := health.Count(0, func(r interruptiontest.Record) bool { return !r.OK }); n != 0 {
		t.Errorf("%d failures reported", n)
	}
}

func TestRebalanceRecommendation(t *testing.T) {
	t.Parallel()
	noticeTime := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	s := startAEMM(t, aemm.Config{RebalanceNoticeTime: noticeTime, Subcommand: aemm.SubcommandSpot, MockDelay: aemm.Never})
	for _, tc := range []struct {
		option, want interruption.Action
	}{
		{"", interruption.ActionCordon},
		{interruption.ActionDrain, interruption.ActionDrain},
	} {
		t.Run("action="+string(tc.option), func(t *testing.T) {
			out := run(t, sourcesFor(t, s.URL(), Options{Signals: []string{SignalRebalance}, RebalanceAction: tc.option}, newRecordingHealth()))
			checkEvent(t, next(t, out), interruption.Event{
				ID:     interruption.NewID(interruption.KindRebalance, "2030-01-02T03:00:00Z"),
				Source: "imds-rebalance",
				Kind:   interruption.KindRebalance,
				Action: tc.want,
			})
		})
	}
}

func TestScheduledMaintenance(t *testing.T) {
	t.Parallel()
	notBefore := time.Date(2030, 1, 5, 6, 7, 8, 0, time.UTC)
	const eventID = "instance-event-0aemm"
	id := interruption.NewID(interruption.KindScheduledMaintenance, eventID)
	for _, tc := range []struct {
		state    string
		action   interruption.Action
		deadline time.Time
	}{
		{"active", interruption.ActionDrain, notBefore},
		{"canceled", interruption.ActionCancel, time.Time{}},
		{"completed", interruption.ActionCancel, time.Time{}},
	} {
		t.Run(tc.state, func(t *testing.T) {
			t.Parallel()
			s := startAEMM(t, aemm.Config{
				Subcommand: aemm.SubcommandEvents,
				Events:     &aemm.ScheduledEvent{EventID: eventID, Code: "system-reboot", State: tc.state, NotBefore: notBefore},
			})
			out := run(t, sourcesFor(t, s.URL(), Options{Signals: []string{SignalScheduledMaintenance}}, newRecordingHealth()))
			checkEvent(t, next(t, out), interruption.Event{
				ID:       id,
				Source:   "imds-scheduled-maintenance",
				Kind:     interruption.KindScheduledMaintenance,
				Action:   tc.action,
				Deadline: tc.deadline,
			})
		})
	}
}

// TestScheduledMaintenanceCanceledAfterActive follows one event from
// active to canceled, as a node would see it across two IMDS answers (AEMM
// cannot change its answer, so the second answer is another AEMM behind the
// same address).
func TestScheduledMaintenanceCanceledAfterActive(t *testing.T) {
	t.Parallel()
	ev := aemm.ScheduledEvent{EventID: "instance-event-0flip", NotBefore: time.Date(2030, 1, 5, 6, 7, 8, 0, time.UTC)}
	ev.State = "active"
	active := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandEvents, Events: &ev})
	ev.State = "canceled"
	canceled := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandEvents, Events: &ev})

	proxy := newFaultProxy(t, active.URL())
	addr := closedAddr(t)
	proxy.serve(t, addr)
	out := run(t, sourcesFor(t, "http://"+addr, Options{Signals: []string{SignalScheduledMaintenance}}, newRecordingHealth()))
	first := next(t, out)
	if first.Action != interruption.ActionDrain {
		t.Fatalf("first event %+v, want drain", first)
	}
	proxy.inject(scheduledURLPath, func(w http.ResponseWriter, r *http.Request) {
		forward(w, r, canceled.URL())
	})
	second := next(t, out)
	if second.Action != interruption.ActionCancel || second.ID != first.ID {
		t.Errorf("second event %+v, want a cancel of %s", second, first.ID)
	}
}

const scheduledURLPath = "/latest/meta-data/" + maintenancePath

// forward answers r with what base answers for the same request.
func forward(w http.ResponseWriter, r *http.Request, base string) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body) //nolint:errcheck
}

func TestASGTermination(t *testing.T) {
	t.Parallel()
	// The flag itself, as a user of AEMM would pass it. AEMM counts the
	// delay from its own start, up to a second before Start returns: 2 s
	// leaves at least a second of InService reads first.
	s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandASGLifecycle, ExtraArgs: []string{"--asg-termination-delay-sec", "2"}})
	health := newRecordingHealth()
	const deadline = 90 * time.Second
	out := run(t, sourcesFor(t, s.URL(), Options{Signals: []string{SignalASGLifecycle}, ASGTerminationDeadline: deadline}, health))
	e := next(t, out)
	checkEvent(t, e, interruption.Event{
		ID:       interruption.NewID(interruption.KindASGTermination, "Terminated"),
		Source:   "imds-asg-lifecycle",
		Kind:     interruption.KindASGTermination,
		Action:   interruption.ActionDrain,
		Deadline: e.Observed.Add(deadline),
	})
	// InService was read (and reported healthy) before Terminated.
	if n, _ := health.Count(0, success("imds-asg-lifecycle")); n < 2 {
		t.Errorf("%d successful reads before the event, want InService reads first", n)
	}
	quiet(t, out, 10*pollInterval)
}

// TestNotInASG: target-lifecycle-state answers 404 outside an Auto Scaling
// group (here: AEMM's spot subcommand has no such path): no event, healthy.
func TestNotInASG(t *testing.T) {
	t.Parallel()
	s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandSpot, MockDelay: aemm.Never})
	health := newRecordingHealth()
	out := run(t, sourcesFor(t, s.URL(), Options{Signals: []string{SignalASGLifecycle, SignalSpot}}, health))
	health.WaitFor(t, "asg reads", 0, 3, success("imds-asg-lifecycle"))
	health.WaitFor(t, "spot reads", 0, 3, success("imds-spot"))
	quiet(t, out, 2*pollInterval)
}

// TestAllSignals runs every source against one AEMM serving every notice,
// the demo's set-up, with the --imdsv2 flag itself.
func TestAllSignals(t *testing.T) {
	t.Parallel()
	s := startAEMM(t, aemm.Config{ExtraArgs: []string{"--imdsv2"}})
	noV1, err := http.Get(s.URL() + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	noV1.Body.Close()
	if noV1.StatusCode != http.StatusUnauthorized {
		t.Fatalf("IMDSv1 read: status %d, want 401 with --imdsv2", noV1.StatusCode)
	}
	out := run(t, sourcesFor(t, s.URL(), Options{}, newRecordingHealth()))
	kinds := map[interruption.Kind]int{}
	for range 4 {
		kinds[next(t, out).Kind]++
	}
	quiet(t, out, 10*pollInterval)
	for _, k := range []interruption.Kind{interruption.KindSpotInterruption, interruption.KindRebalance,
		interruption.KindScheduledMaintenance, interruption.KindASGTermination} {
		if kinds[k] != 1 {
			t.Errorf("%d events of kind %s, want 1 (all: %v)", kinds[k], k, kinds)
		}
	}
}

// TestIMDSv1Fallback: with AllowIMDSv1 the sources work against an IMDS
// that gives no token (AEMM's token endpoint broken by a proxy here).
func TestIMDSv1Fallback(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandSpot})
			proxy := newFaultProxy(t, s.URL())
			proxy.inject(tokenPath, answer(status, "no tokens here"))
			addr := closedAddr(t)
			proxy.serve(t, addr)
			out := run(t, sourcesFor(t, "http://"+addr, Options{Signals: []string{SignalSpot}, AllowIMDSv1: true}, newRecordingHealth()))
			if e := next(t, out); e.Kind != interruption.KindSpotInterruption {
				t.Errorf("event %+v", e)
			}
		})
	}
}

// TestAEMMPayloads checks that the aemm* golden payloads under testdata are
// what AEMM answers (-update rewrites them).
func TestAEMMPayloads(t *testing.T) {
	t.Parallel()
	events := aemm.ScheduledEvent{
		EventID:           "instance-event-0aemm",
		Code:              "system-reboot",
		NotBefore:         time.Date(2030, 1, 5, 6, 7, 8, 0, time.UTC),
		NotAfter:          time.Date(2030, 1, 6, 6, 7, 8, 0, time.UTC),
		NotBeforeDeadline: time.Date(2030, 1, 7, 6, 7, 8, 0, time.UTC),
	}
	base := aemm.Config{
		SpotTime:            time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		RebalanceNoticeTime: time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC),
	}
	active, canceled := base, base
	ae, ce := events, events
	ae.State, ce.State = "active", "canceled"
	active.Events, canceled.Events = &ae, &ce
	servers := map[string]*aemm.Server{"active": startAEMM(t, active), "canceled": startAEMM(t, canceled)}
	for _, g := range []struct {
		server, path, file string
	}{
		{"active", spotPath, "spot/aemm.json"},
		{"active", rebalancePath, "rebalance/aemm.json"},
		{"active", maintenancePath, "maintenance/aemm-active.json"},
		{"canceled", maintenancePath, "maintenance/aemm-canceled.json"},
		{"active", asgLifecyclePath, "asglifecycle/aemm-terminated.txt"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, found, err := fetch(ctx, NewClient(Options{Endpoint: servers[g.server].URL()}, nil), g.path)
		cancel()
		if err != nil || !found {
			t.Fatalf("%s: found %v, %v", g.path, found, err)
		}
		file := filepath.Join("testdata", g.file)
		if *update {
			if err := os.WriteFile(file, body, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if !bytes.Equal(body, want) {
			t.Errorf("%s: AEMM answers\n%s\nwant (%s)\n%s", g.path, body, file, want)
		}
	}
}
