package gce

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/test/emulators/gcemeta"
)

// recordingHealth records every report and signals each on a channel.
type recordingHealth struct {
	mu        sync.Mutex
	successes int
	failures  []string
	reports   chan string // "ok" or the failure's reason
}

func newHealth() *recordingHealth { return &recordingHealth{reports: make(chan string, 1024)} }

func (h *recordingHealth) Success(string) {
	h.mu.Lock()
	h.successes++
	h.mu.Unlock()
	select {
	case h.reports <- "ok":
	default:
	}
}

func (h *recordingHealth) Failure(_, reason string, _ error) {
	h.mu.Lock()
	h.failures = append(h.failures, reason)
	h.mu.Unlock()
	select {
	case h.reports <- reason:
	default:
	}
}

func (h *recordingHealth) failureCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.failures)
}

// await waits up to d for the report want, skipping others.
func (h *recordingHealth) await(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case got := <-h.reports:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %q health report within %v", want, d)
		}
	}
}

type harness struct {
	fake   *gcemeta.Server
	health *recordingHealth
	out    chan interruption.Event
	done   chan error
	cancel context.CancelFunc
}

// startFake runs a fake metadata server and points the library at it.
func startFake(t *testing.T) *gcemeta.Server {
	t.Helper()
	fake, err := gcemeta.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	t.Setenv("GCE_METADATA_HOST", fake.Host())
	return fake
}

// runSource starts the source named name against fake and waits for its first
// answer unless the test wants to see it itself.
func runSource(t *testing.T, fake *gcemeta.Server, name string, o Options) *harness {
	t.Helper()
	h := &harness{fake: fake, health: newHealth(), out: make(chan interruption.Event, 16), done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	srcs, err := Sources(metadata.NewWithOptions(&metadata.Options{}), o, h.health, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var src interruption.Source
	for _, s := range srcs {
		if s.Name() == name {
			src = s
		}
	}
	if src == nil {
		t.Fatalf("no source %s", name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- src.Run(ctx, h.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// next waits up to d for an event.
func (h *harness) next(t *testing.T, d time.Duration) interruption.Event {
	t.Helper()
	select {
	case e := <-h.out:
		return e
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
		return interruption.Event{}
	}
}

// none asserts that no event comes within d.
func (h *harness) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e := <-h.out:
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(d):
	}
}

var (
	preemptID = interruption.NewID(interruption.KindPreemption, pathPreempted, gcemeta.DefaultInstanceID)
	termID    = interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, gcemeta.DefaultInstanceID, maintenanceTerminate)
	migrateID = interruption.NewID(interruption.KindHostMaintenance, pathMaintenance, gcemeta.DefaultInstanceID, maintenanceMigrate)
)

func checkPreemption(t *testing.T, e interruption.Event, lead time.Duration) {
	t.Helper()
	if e.Kind != interruption.KindPreemption || e.Action != interruption.ActionDrain || e.ID != preemptID || e.Source != NamePreempted {
		t.Errorf("event %+v, want a drain for preemption %s from %s", e, preemptID, NamePreempted)
	}
	if e.Observed.IsZero() || !e.Deadline.Equal(e.Observed.Add(lead)) {
		t.Errorf("deadline %v, want observed %v + %v", e.Deadline, e.Observed, lead)
	}
	if want := "GCE spot VM lastcall-test-vm in us-central1-a preempted"; e.Detail != want {
		t.Errorf("detail %q, want %q", e.Detail, want)
	}
}

func TestPreemptedFlip(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NamePreempted, Options{})
	h.health.await(t, "ok", 5*time.Second) // FALSE read: the long poll is on.
	h.none(t, 200*time.Millisecond)
	fake.Set("instance/preempted", "TRUE")
	checkPreemption(t, h.next(t, time.Second), DefaultSpotDeadline)
	// The same notice again (a new ETag, the same value) is the same event.
	fake.Set("instance/preempted", "TRUE")
	h.none(t, 300*time.Millisecond)
}

func TestPreemptedAtStart(t *testing.T) {
	fake := startFake(t)
	fake.Set("instance/preempted", "TRUE")
	h := runSource(t, fake, NamePreempted, Options{SpotDeadline: 25 * time.Second})
	checkPreemption(t, h.next(t, 2*time.Second), 25*time.Second)
}

func TestMaintenance(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NameMaintenance, Options{MaintenanceDeadline: 45 * time.Second})
	h.health.await(t, "ok", 5*time.Second)

	fake.Set("instance/maintenance-event", maintenanceTerminate)
	e := h.next(t, time.Second)
	if e.Kind != interruption.KindHostMaintenance || e.Action != interruption.ActionDrain || e.ID != termID || e.Source != NameMaintenance {
		t.Errorf("TERMINATE: %+v", e)
	}
	if !e.Deadline.Equal(e.Observed.Add(45 * time.Second)) {
		t.Errorf("TERMINATE deadline %v, want observed %v + 45s", e.Deadline, e.Observed)
	}

	fake.Set("instance/maintenance-event", maintenanceNone)
	e = h.next(t, time.Second)
	if e.Action != interruption.ActionCancel || e.ID != termID || e.Kind != interruption.KindHostMaintenance {
		t.Errorf("NONE after TERMINATE: %+v, want a cancel of %s", e, termID)
	}

	fake.Set("instance/maintenance-event", maintenanceMigrate)
	e = h.next(t, time.Second)
	if e.Action != interruption.ActionNotify || e.ID != migrateID || !e.Deadline.IsZero() {
		t.Errorf("MIGRATE: %+v, want a notify %s with no deadline", e, migrateID)
	}
	fake.Set("instance/maintenance-event", maintenanceMigrate)
	h.none(t, 300*time.Millisecond)

	// A stop replacing a migration withdraws the migration.
	fake.Set("instance/maintenance-event", maintenanceTerminate)
	if e = h.next(t, time.Second); e.Action != interruption.ActionCancel || e.ID != migrateID {
		t.Errorf("TERMINATE after MIGRATE: first %+v, want a cancel of %s", e, migrateID)
	}
	if e = h.next(t, time.Second); e.Action != interruption.ActionDrain || e.ID != termID {
		t.Errorf("TERMINATE after MIGRATE: then %+v, want a drain %s", e, termID)
	}
}

func TestNoneAtStartIsQuiet(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NameMaintenance, Options{})
	h.health.await(t, "ok", 5*time.Second)
	h.none(t, 200*time.Millisecond)
}

func TestMalformedKeepsRunning(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NamePreempted, Options{})
	h.health.await(t, "ok", 5*time.Second)
	fake.Set("instance/preempted", "<html>proxy error</html>")
	h.health.await(t, string(interruption.ReasonMalformed), time.Second)
	h.none(t, 100*time.Millisecond)
	fake.Set("instance/preempted", "TRUE")
	checkPreemption(t, h.next(t, time.Second), DefaultSpotDeadline)
}

func TestNoSpinning(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NamePreempted, Options{})
	h.health.await(t, "ok", 5*time.Second)
	before := fake.Requests("instance/preempted")
	time.Sleep(time.Second) // Measuring a rate: nothing changes for 1 s.
	if n := fake.Requests("instance/preempted") - before; n > 1 {
		t.Errorf("%d requests in 1 s without a change, want at most 1", n)
	}
	if n := h.health.failureCount(); n != 0 {
		t.Errorf("%d failures reported", n)
	}
}

func TestLongPollTimeoutAnswers(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NamePreempted, Options{LongPollTimeout: time.Second})
	h.health.await(t, "ok", 5*time.Second)
	// With timeout_sec=1 the server answers the unchanged value each second:
	// each answer is a successful read, not an event, and no stall.
	h.health.await(t, "ok", 3*time.Second)
	h.none(t, 100*time.Millisecond)
	if n := h.health.failureCount(); n != 0 {
		t.Errorf("%d failures reported", n)
	}
}

func TestDeletedPathIsHTTPError(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NameMaintenance, Options{})
	h.health.await(t, "ok", 5*time.Second)
	fake.Delete("instance/maintenance-event")
	h.health.await(t, string(interruption.ReasonHTTP), 2*time.Second)
	fake.Set("instance/maintenance-event", maintenanceTerminate)
	if e := h.next(t, 5*time.Second); e.ID != termID || e.Action != interruption.ActionDrain {
		t.Errorf("after the path came back: %+v", e)
	}
}

// TestUnreachableRecovers stops the metadata server under a running source,
// then brings it back on the same address.
func TestUnreachableRecovers(t *testing.T) {
	fake := startFake(t)
	h := runSource(t, fake, NamePreempted, Options{LongPollTimeout: time.Second})
	h.health.await(t, "ok", 5*time.Second)
	fake.Close()
	h.health.await(t, string(interruption.ReasonUnreachable), 15*time.Second)
	down := time.Now()
	h.health.await(t, string(interruption.ReasonUnreachable), 15*time.Second)
	// Backoff, not a tight loop: two failures take at least a second.
	if d := time.Since(down); d < 900*time.Millisecond {
		t.Errorf("second failure %v after the first: no backoff", d)
	}

	fake2, err := gcemeta.StartOn(fake.Host())
	if err != nil {
		t.Fatalf("restarting the fake: %v", err)
	}
	t.Cleanup(fake2.Close)
	fake2.Set("instance/preempted", "TRUE")
	checkPreemption(t, h.next(t, 20*time.Second), DefaultSpotDeadline)
}

func TestIdentity(t *testing.T) {
	fake := startFake(t)
	fake.Set("instance/scheduling/provisioning-model", ProvisioningStandard)
	fake.Set("instance/scheduling/preemptible", "FALSE")
	in, err := Identity(t.Context(), metadata.NewWithOptions(&metadata.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	want := Instance{Name: gcemeta.DefaultInstanceName, Zone: "us-central1-a", ID: gcemeta.DefaultInstanceID, ProvisioningModel: ProvisioningStandard}
	if in != want {
		t.Errorf("Identity = %+v, want %+v", in, want)
	}
	if in.Kind() != "VM" {
		t.Errorf("Kind = %q", in.Kind())
	}
	fake.Delete("instance/scheduling/provisioning-model")
	fake.Set("instance/scheduling/preemptible", "TRUE")
	if in, err = Identity(t.Context(), metadata.NewWithOptions(&metadata.Options{})); err != nil || in.Kind() != "preemptible VM" {
		t.Errorf("without provisioning-model: %+v, %v", in, err)
	}
	fake.Delete("instance/id")
	_, err = Identity(t.Context(), metadata.NewWithOptions(&metadata.Options{}))
	if interruption.ReasonOf(err) != interruption.ReasonHTTP {
		t.Errorf("without instance/id: %v (reason %s), want http_error", err, interruption.ReasonOf(err))
	}
}

func TestSourcesOptions(t *testing.T) {
	c := metadata.NewWithOptions(&metadata.Options{})
	if _, err := Sources(nil, Options{}, nil, nil, nil); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := Sources(c, Options{SpotDeadline: -time.Second}, nil, nil, nil); err == nil {
		t.Error("negative deadline accepted")
	}
	srcs, err := Sources(c, Options{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) != 2 || srcs[0].Name() != NamePreempted || srcs[1].Name() != NameMaintenance {
		t.Errorf("sources %v", srcs)
	}
	o, _ := Options{LongPollTimeout: 1500 * time.Millisecond}.withDefaults()
	if o.LongPollTimeout != 2*time.Second {
		t.Errorf("LongPollTimeout %v, want rounded up to 2s", o.LongPollTimeout)
	}
}

func TestBackoff(t *testing.T) {
	b := interruption.NewBackoff(minBackoff, maxBackoff)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		if got := b.Step(); got != want {
			t.Errorf("backoff after %d failures = %v, want %v", i+1, got, want)
		}
	}
}
