package azure

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// pollInterval is the Poller interval of the integration tests.
const pollInterval = 20 * time.Millisecond

// waitTimeout bounds every wait for an event or a health report.
const waitTimeout = 10 * time.Second

// The recorder and waits shared by the sources' tests.
type recordingHealth = interruptiontest.Health

var (
	newRecordingHealth = interruptiontest.NewHealth
	next               = interruptiontest.Next
	quiet              = interruptiontest.Quiet
	success            = interruptiontest.Success(SourceName)
)

func failure(reason interruption.Reason) func(interruptiontest.Record) bool {
	return interruptiontest.Failure(SourceName, reason)
}

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

// newSource builds the source of o against fake; the VM is vm unless o
// names another.
func newSource(t *testing.T, fake *azuremeta.Server, o Options, health interruption.HealthReporter) interruption.Source {
	t.Helper()
	o.Endpoint = fake.URL()
	if o.Interval == 0 {
		o.Interval = pollInterval
	}
	if o.VMName == "" {
		o.VMName = vm
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
