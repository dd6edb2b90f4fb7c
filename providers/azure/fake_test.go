package azure

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// These tests run the source over real HTTP against the fake IMDS of
// test/emulators/azuremeta.

const vm = "aks-nodepool1-12345678-vmss_0"

func scheduled(id, eventType string, notBefore time.Time, resources ...string) azuremeta.Event {
	return azuremeta.Event{
		EventID:           id,
		EventType:         eventType,
		EventStatus:       "Scheduled",
		NotBefore:         azuremeta.FormatTime(notBefore),
		Resources:         resources,
		DurationInSeconds: -1,
	}
}

func TestPreempt(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	notBefore := time.Now().Add(30 * time.Second).Truncate(time.Second).UTC()
	fake.SetEvents(scheduled("602d9444-d2cd-49c7-8624-8643e7171297", "Preempt", notBefore, vm))
	health := newRecordingHealth()
	out := run(t, newSource(t, fake, Options{VMName: vm}, health))
	checkEvent(t, next(t, out), interruption.Event{
		ID:       interruption.NewID(interruption.KindPreemption, "602d9444-d2cd-49c7-8624-8643e7171297"),
		Kind:     interruption.KindPreemption,
		Action:   interruption.ActionDrain,
		Deadline: notBefore,
	})
	// The same event on every later read is not sent again.
	_, n := health.WaitFor(t, "a read", 0, 1, success)
	health.WaitFor(t, "more reads", n+3, 1, success)
	quiet(t, out, 2*pollInterval)
}

func TestEventTypes(t *testing.T) {
	t.Parallel()
	notBefore := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		eventType   string
		drainFreeze bool
		kind        interruption.Kind
		action      interruption.Action
	}{
		{"Terminate", false, interruption.KindTermination, interruption.ActionDrain},
		{"Reboot", false, interruption.KindHostMaintenance, interruption.ActionDrain},
		{"Redeploy", false, interruption.KindHostMaintenance, interruption.ActionDrain},
		{"Freeze", false, interruption.KindHostMaintenance, interruption.ActionNotify},
		{"Freeze", true, interruption.KindHostMaintenance, interruption.ActionDrain},
	} {
		name := tc.eventType
		if tc.drainFreeze {
			name += "/DrainFreeze"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := startFake(t)
			fake.SetEvents(scheduled("e-"+tc.eventType, tc.eventType, notBefore, vm))
			out := run(t, newSource(t, fake, Options{DrainFreeze: tc.drainFreeze}, newRecordingHealth()))
			checkEvent(t, next(t, out), interruption.Event{
				ID:       interruption.NewID(tc.kind, "e-"+tc.eventType),
				Kind:     tc.kind,
				Action:   tc.action,
				Deadline: notBefore,
			})
		})
	}
}

// TestEventRemoved: an event that leaves the document is cancelled, once.
func TestEventRemoved(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(scheduled("gone-1", "Reboot", time.Now().Add(time.Hour), vm))
	health := newRecordingHealth()
	out := run(t, newSource(t, fake, Options{}, health))
	first := next(t, out)
	if first.Action != interruption.ActionDrain {
		t.Fatalf("first event %+v, want a drain", first)
	}
	fake.SetEvents()
	second := next(t, out)
	if second.Action != interruption.ActionCancel || second.ID != first.ID || second.Kind != first.Kind || second.Source != SourceName {
		t.Errorf("second event %+v, want a cancel of %s", second, first.ID)
	}
	_, n := health.WaitFor(t, "a read", 0, 1, success)
	health.WaitFor(t, "more reads", n+3, 1, success)
	quiet(t, out, 2*pollInterval)
}

// TestOtherVM: events for other VMs are ignored when VMName is set.
func TestOtherVM(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	at := time.Now().Add(time.Hour)
	fake.SetEvents(scheduled("other-1", "Preempt", at, "some-other-vm"))
	health := newRecordingHealth()
	out := run(t, newSource(t, fake, Options{VMName: vm}, health))
	_, n := health.WaitFor(t, "a read", 0, 1, success)
	health.WaitFor(t, "more reads", n+2, 1, success)
	quiet(t, out, 2*pollInterval)
	fake.SetEvents(scheduled("other-1", "Preempt", at, "some-other-vm"), scheduled("mine-1", "Preempt", at, vm))
	if e := next(t, out); e.ID != interruption.NewID(interruption.KindPreemption, "mine-1") {
		t.Errorf("event %+v, want the one for %s", e, vm)
	}
}

// TestStartedEvent: an event already Started has no NotBefore; the
// deadline is when it was read.
func TestStartedEvent(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(azuremeta.Event{EventID: "s-1", EventType: "Preempt", EventStatus: "Started", Resources: []string{vm}, DurationInSeconds: -1})
	before := time.Now()
	out := run(t, newSource(t, fake, Options{}, newRecordingHealth()))
	e := next(t, out)
	if e.Action != interruption.ActionDrain || e.Deadline.Before(before) || e.Deadline.After(time.Now()) {
		t.Errorf("event %+v, want a drain due when read", e)
	}
}

// ackSource is the source's Acknowledge, the step its Completer takes.
type ackSource interface {
	Acknowledge(ctx context.Context, ev interruption.Event) error
}

func acknowledger(t *testing.T, src interruption.Source) ackSource {
	t.Helper()
	a, ok := src.(ackSource)
	if !ok {
		t.Fatalf("%T is not an Acknowledger", src)
	}
	return a
}

func TestAcknowledge(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	const id = "f020ba2e-3bc0-4c40-a10b-86575a9eabd5"
	fake.SetEvents(
		scheduled("another-event", "Freeze", time.Now().Add(time.Hour), vm),
		scheduled(id, "Reboot", time.Now().Add(time.Hour), vm),
	)
	health := newRecordingHealth()
	src := newSource(t, fake, Options{VMName: vm, Acknowledge: true}, health)
	out := run(t, src)
	var reboot interruption.Event
	for reboot.ID == "" {
		if e := next(t, out); e.Action == interruption.ActionDrain {
			reboot = e
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := acknowledger(t, src).Acknowledge(ctx, reboot); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if got := fake.Approved(); !slices.Equal(got, []string{id}) {
		t.Errorf("approved %v, want [%s]", got, id)
	}
	for _, e := range fake.Events() {
		started := e.EventStatus == "Started" && e.NotBefore == ""
		if started != (e.EventID == id) {
			t.Errorf("event %+v after approving %s", e, id)
		}
	}
	// The event, now Started, is the same event: nothing new is sent, and
	// acknowledging it again does not post again.
	_, n := health.WaitFor(t, "a read", 0, 1, success)
	health.WaitFor(t, "more reads", n+3, 1, success)
	quiet(t, out, 2*pollInterval)
	if err := acknowledger(t, src).Acknowledge(ctx, reboot); err != nil {
		t.Fatalf("second Acknowledge: %v", err)
	}
	if got := fake.Approved(); len(got) != 1 {
		t.Errorf("approved %v after a second Acknowledge of a started event", got)
	}
}

// TestAcknowledgeOptOut: without Options.Acknowledge nothing is posted.
func TestAcknowledgeOptOut(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(scheduled("no-ack", "Preempt", time.Now().Add(time.Hour), vm))
	src := newSource(t, fake, Options{}, newRecordingHealth())
	out := run(t, src)
	e := next(t, out)
	if err := acknowledger(t, src).Acknowledge(context.Background(), e); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if got := fake.Approved(); len(got) != 0 {
		t.Errorf("approved %v without the opt-in", got)
	}
	if got := fake.Events(); got[0].EventStatus != "Scheduled" {
		t.Errorf("event %+v, want still Scheduled", got[0])
	}
}

// TestAcknowledgeSharedEvent: an event that also names another VM is never
// approved, since approving it would start it for that VM too.
func TestAcknowledgeSharedEvent(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(scheduled("shared", "Reboot", time.Now().Add(time.Hour), vm, "neighbour"))
	src := newSource(t, fake, Options{VMName: vm, Acknowledge: true}, newRecordingHealth())
	out := run(t, src)
	e := next(t, out)
	if err := acknowledger(t, src).Acknowledge(context.Background(), e); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if got := fake.Approved(); len(got) != 0 {
		t.Errorf("approved %v, an event shared with another VM", got)
	}
}

// TestAcknowledgeGone: an event no longer listed has nothing to approve.
func TestAcknowledgeGone(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(scheduled("short-lived", "Reboot", time.Now().Add(time.Hour), vm))
	src := newSource(t, fake, Options{Acknowledge: true}, newRecordingHealth())
	out := run(t, src)
	e := next(t, out)
	fake.SetEvents()
	if c := next(t, out); c.Action != interruption.ActionCancel {
		t.Fatalf("event %+v, want a cancel", c)
	}
	if err := acknowledger(t, src).Acknowledge(context.Background(), e); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if got := fake.Approved(); len(got) != 0 {
		t.Errorf("approved %v", got)
	}
}

// TestAcknowledgeError: a refused POST is an HTTP error of Acknowledge.
func TestAcknowledgeError(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetEvents(scheduled("refused", "Reboot", time.Now().Add(time.Hour), vm))
	src := newSource(t, fake, Options{Acknowledge: true}, newRecordingHealth())
	out := run(t, src)
	e := next(t, out)
	fake.Close() // the endpoint goes away
	err := acknowledger(t, src).Acknowledge(context.Background(), e)
	if err == nil {
		t.Fatal("Acknowledge succeeded against a closed endpoint")
	}
	if r := interruption.ReasonOf(err); r != interruption.ReasonUnreachable {
		t.Errorf("reason %q of %v, want %q", r, err, interruption.ReasonUnreachable)
	}
}

// TestMalformedDocument: a malformed answer is reported as malformed, and
// the source keeps reading.
func TestMalformedDocument(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetRawDocument([]byte(`{"DocumentIncarnation": 1, "Events": [{"EventType": "Preempt", "EventStatus": "Scheduled"}]}`))
	health := newRecordingHealth()
	out := run(t, newSource(t, fake, Options{}, health))
	r, n := health.WaitFor(t, "a malformed read", 0, 1, failure(interruption.ReasonMalformed))
	t.Logf("reported: %v", r.Err)
	fake.SetEvents(scheduled("after", "Preempt", time.Now().Add(time.Hour), vm))
	if e := next(t, out); e.ID != interruption.NewID(interruption.KindPreemption, "after") {
		t.Errorf("event %+v after recovering", e)
	}
	health.WaitFor(t, "a good read", n, 1, success)
}

// TestHTTPError: an answer other than 200 is an HTTP error.
func TestHTTPError(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetStatus(http.StatusInternalServerError)
	health := newRecordingHealth()
	run(t, newSource(t, fake, Options{}, health))
	r, _ := health.WaitFor(t, "an HTTP error", 0, 1, failure(interruption.ReasonHTTP))
	t.Logf("reported: %v", r.Err)
}

// TestMetadataHeaderRequired: the fake refuses a request without the
// Metadata header, as IMDS does, and the source sends it.
func TestMetadataHeaderRequired(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	resp, err := http.Get(fake.URL() + eventsPath + "?api-version=" + apiVersion)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d without the header, want 400", resp.StatusCode)
	}
	health := newRecordingHealth()
	run(t, newSource(t, fake, Options{}, health))
	health.WaitFor(t, "a good read", 0, 1, success)
	if n := fake.BadRequests(); n != 1 {
		t.Errorf("%d bad requests, want only the test's own", n)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{VMName: vm, Interval: -time.Second},
		{VMName: vm, Endpoint: "169.254.169.254"},
		{VMName: vm, Endpoint: "ftp://169.254.169.254"},
		{VMName: vm, Endpoint: "http://"},
		{VMName: vm, Endpoint: "http://[::1"},
		{}, // no VM name
	} {
		if _, err := Sources(nil, o, nil, nil, nil); err == nil {
			t.Errorf("Sources accepted %+v", o)
		}
	}
	if _, err := Sources(nil, Options{VMName: vm}, nil, nil, nil); err != nil {
		t.Errorf("Sources refused the defaults: %v", err)
	}
}
