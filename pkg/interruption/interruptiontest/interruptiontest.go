// Package interruptiontest helps test interruption sources: a HealthReporter
// that records every report and lets a test wait for them, and bounded waits
// on a source's output.
package interruptiontest

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// WaitTimeout bounds every wait for an event or a health report.
const WaitTimeout = 10 * time.Second

// Record is one report to Health.
type Record struct {
	Source string
	OK     bool
	Reason string
	Err    error
}

// Health is a HealthReporter that keeps every report, and counts the
// values an answer held that its source does not know (health.Sources
// counts them in lastcall_source_unknown_values_total).
type Health struct {
	mu      sync.Mutex
	records []Record
	unknown map[string]int
	changed chan struct{} // signalled, without blocking, on each report
}

// NewHealth returns an empty recorder.
func NewHealth() *Health { return &Health{changed: make(chan struct{}, 1), unknown: map[string]int{}} }

// Unknown counts an unknown value in an answer of source.
func (h *Health) Unknown(source string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unknown[source]++
}

// Unknowns is how many unknown values source reported.
func (h *Health) Unknowns(source string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unknown[source]
}

// Log is a log sink safe for a source's goroutines.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (h *Health) add(r Record) {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Success implements interruption.HealthReporter.
func (h *Health) Success(source string) { h.add(Record{Source: source, OK: true}) }

// Failure implements interruption.HealthReporter.
func (h *Health) Failure(source, reason string, err error) {
	h.add(Record{Source: source, Reason: reason, Err: err})
}

// Count returns how many reports from index from on match, and how many
// reports there are in all.
func (h *Health) Count(from int, match func(Record) bool) (n, total int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records[min(from, len(h.records)):] {
		if match(r) {
			n++
		}
	}
	return n, len(h.records)
}

// WaitFor waits until at least n reports from index from on match, and
// returns the n-th and the number of reports so far.
func (h *Health) WaitFor(t *testing.T, what string, from, n int, match func(Record) bool) (Record, int) {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for {
		h.mu.Lock()
		seen := 0
		for _, r := range h.records[min(from, len(h.records)):] {
			if match(r) {
				if seen++; seen == n {
					total := len(h.records)
					h.mu.Unlock()
					return r, total
				}
			}
		}
		h.mu.Unlock()
		select {
		case <-h.changed:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("waiting for %d reports of %s: got %d; all reports: %+v", n, what, seen, h.records)
		}
	}
}

// Failure matches a failed read of source for reason.
func Failure(source string, reason interruption.Reason) func(Record) bool {
	return func(r Record) bool { return r.Source == source && !r.OK && r.Reason == string(reason) }
}

// Success matches a successful read of source.
func Success(source string) func(Record) bool {
	return func(r Record) bool { return r.Source == source && r.OK }
}

// Next returns the next event, failing the test after WaitTimeout.
func Next(t *testing.T, out <-chan interruption.Event) interruption.Event {
	t.Helper()
	select {
	case e := <-out:
		return e
	case <-time.After(WaitTimeout):
		t.Fatal("no event")
		return interruption.Event{}
	}
}

// Quiet checks that no event is waiting, nor comes for d: a bounded
// negative check. Callers first wait for reads (health reports come before
// a read's events are sent), so an event of those reads is already in out.
func Quiet(t *testing.T, out <-chan interruption.Event, d time.Duration) {
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
