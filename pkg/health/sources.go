// Package health tracks whether each interruption source can actually read
// its signal, for readiness (/readyz) and the per-source metrics, and
// whether lastcall's own loop is alive, for liveness (/healthz).
package health

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// Sources records the outcome of every read of every source.
type Sources struct {
	clock      clock.PassiveClock
	staleAfter time.Duration
	metrics    *metrics
	started    time.Time

	mu      sync.Mutex
	sources map[string]*sourceState
	synced  chan struct{} // closed once every registered source succeeded once
}

type sourceState struct {
	lastSuccess time.Time
	lastErr     error
	lastReason  string
}

// NewSources returns a tracker that calls a source unhealthy when it has not
// read its signal successfully for staleAfter.
func NewSources(reg prometheus.Registerer, clk clock.PassiveClock, staleAfter time.Duration) *Sources {
	return &Sources{
		clock:      clk,
		staleAfter: staleAfter,
		metrics:    newMetrics(reg),
		started:    clk.Now(),
		sources:    map[string]*sourceState{},
		synced:     make(chan struct{}),
	}
}

// Register declares a source before it first reports, so that a source that
// never succeeds shows up as down rather than missing.
func (s *Sources) Register(source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sources[source]; !ok {
		s.sources[source] = &sourceState{}
		s.metrics.up.WithLabelValues(source).Set(0)
	}
}

// Success records a successful read.
func (s *Sources) Success(source string) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(source)
	st.lastSuccess, st.lastErr, st.lastReason = now, nil, ""
	s.metrics.up.WithLabelValues(source).Set(1)
	s.metrics.lastSuccess.WithLabelValues(source).Set(float64(now.UnixNano()) / 1e9)
	s.checkSynced()
}

// ReasonUnknownValue is the reason under which lastcall_source_errors_total
// counts a value in an answer that lastcall does not know (a new
// maintenance state, event type or status): the read succeeded, and the
// rest of the answer was used.
const ReasonUnknownValue = "unknown_value"

// Unknown records a value in a source's answer that lastcall does not
// know. The read itself succeeded (the source reports Success too), so the
// source stays up; the value is counted under ReasonUnknownValue.
func (s *Sources) Unknown(source string) {
	s.metrics.errors.WithLabelValues(source, ReasonUnknownValue).Inc()
}

// Failure records a failed read with a bounded reason.
func (s *Sources) Failure(source, reason string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state(source)
	st.lastErr, st.lastReason = err, reason
	s.metrics.up.WithLabelValues(source).Set(0)
	s.metrics.errors.WithLabelValues(source, reason).Inc()
}

// Synced is closed once every registered source has read its signal
// successfully at least once: from then on, the set of active notices is
// known.
func (s *Sources) Synced() <-chan struct{} { return s.synced }

// Check returns nil when every source has read its signal within the stale
// window (or, before its first read, while start-up is within it), and an
// error naming each failing source and the reason of its last failure
// otherwise, never the failure's own text.
func (s *Sources) Check() error { return s.check(false) }

// CheckRead is Check, except that a source that has not read its signal
// yet fails it at once: it says whether every source can be read now, for
// a process whose sources answer at once (not a long poll).
func (s *Sources) CheckRead() error { return s.check(true) }

func (s *Sources) check(readOnce bool) error {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.sources))
	for n := range s.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	var bad []string
	for _, n := range names {
		st := s.sources[n]
		last := st.lastSuccess
		if last.IsZero() {
			last = s.started
		}
		var msg string
		switch {
		case readOnce && st.lastSuccess.IsZero():
			msg = fmt.Sprintf("%s: not read yet", n)
		case now.Sub(last) <= s.staleAfter:
			continue
		default:
			msg = fmt.Sprintf("%s: no successful read for %s", n, now.Sub(last).Round(time.Second))
		}
		if st.lastErr != nil {
			// The reason only: the error's text, which may carry a cloud's
			// or the API server's own words, is in the log, not on an
			// unauthenticated probe.
			msg += fmt.Sprintf(" (last failure: %s)", st.lastReason)
		}
		bad = append(bad, msg)
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

func (s *Sources) state(source string) *sourceState {
	st, ok := s.sources[source]
	if !ok {
		st = &sourceState{}
		s.sources[source] = st
	}
	return st
}

func (s *Sources) checkSynced() {
	select {
	case <-s.synced:
		return
	default:
	}
	for _, st := range s.sources {
		if st.lastSuccess.IsZero() {
			return
		}
	}
	close(s.synced)
}
