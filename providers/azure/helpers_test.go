package azure

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// pollInterval is the Poller interval of the integration tests.
const pollInterval = 20 * time.Millisecond

// waitTimeout bounds every wait for an event or a health report.
const waitTimeout = 10 * time.Second

// healthRecord is one report to recordingHealth.
type healthRecord struct {
	ok     bool
	reason string
	err    error
}

// recordingHealth is a HealthReporter that keeps every report.
type recordingHealth struct {
	mu      sync.Mutex
	records []healthRecord
	changed chan struct{} // signalled, without blocking, on each report
}

func newRecordingHealth() *recordingHealth {
	return &recordingHealth{changed: make(chan struct{}, 1)}
}

func (h *recordingHealth) add(r healthRecord) {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *recordingHealth) Success(string) { h.add(healthRecord{ok: true}) }

func (h *recordingHealth) Failure(_, reason string, err error) {
	h.add(healthRecord{reason: reason, err: err})
}

// waitFor waits until a report from index from on matches, and returns it
// and the number of reports so far.
func (h *recordingHealth) waitFor(t *testing.T, what string, from int, match func(healthRecord) bool) (healthRecord, int) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		h.mu.Lock()
		for _, r := range h.records[min(from, len(h.records)):] {
			if match(r) {
				n := len(h.records)
				h.mu.Unlock()
				return r, n
			}
		}
		h.mu.Unlock()
		select {
		case <-h.changed:
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("waiting for a report of %s; all reports: %+v", what, h.records)
		}
	}
}

func failure(reason interruption.Reason) func(healthRecord) bool {
	return func(r healthRecord) bool { return !r.ok && r.reason == string(reason) }
}

func success(r healthRecord) bool { return r.ok }

// testLogger writes the source's logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startFake starts the fake IMDS for the test.
func startFake(t *testing.T) *azuremeta.Server {
	t.Helper()
	s, err := azuremeta.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// newSource builds the source of o against fake.
func newSource(t *testing.T, fake *azuremeta.Server, o Options, health interruption.HealthReporter) interruption.Source {
	t.Helper()
	o.Endpoint = fake.URL()
	if o.Interval == 0 {
		o.Interval = pollInterval
	}
	sources, err := Sources(nil, o, health, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != 1 || sources[0].Name() != SourceName {
		t.Fatalf("sources %v, want one named %s", sources, SourceName)
	}
	return sources[0]
}

// run runs src until the test ends, and returns its output. At cleanup it
// checks that Run returned ctx's error.
func run(t *testing.T, src interruption.Source) <-chan interruption.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan interruption.Event, 16)
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return out
}

// next waits for the next event.
func next(t *testing.T, out <-chan interruption.Event) interruption.Event {
	t.Helper()
	select {
	case e := <-out:
		return e
	case <-time.After(waitTimeout):
		t.Fatal("no event")
		return interruption.Event{}
	}
}

// quiet checks that no event is waiting, nor comes for d. Callers first
// wait for reads (health reports come before a read's events are sent), so
// an event of those reads is already in out.
func quiet(t *testing.T, out <-chan interruption.Event, d time.Duration) {
	t.Helper()
	select {
	case e := <-out:
		t.Errorf("unexpected event %+v", e)
		return
	default:
	}
	select {
	case e := <-out:
		t.Errorf("unexpected event %+v", e)
	case <-time.After(d):
	}
}

// checkEvent compares the fields the source sets.
func checkEvent(t *testing.T, got, want interruption.Event) {
	t.Helper()
	if got.ID != want.ID || got.Source != SourceName || got.Kind != want.Kind ||
		got.Action != want.Action || !got.Deadline.Equal(want.Deadline) {
		t.Errorf("event:\n got  %+v\n want %+v", got, want)
	}
	if got.Observed.IsZero() || got.Detail == "" {
		t.Errorf("event without Observed or Detail: %+v", got)
	}
}
