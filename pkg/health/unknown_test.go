package health

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// An unknown value is counted under its own reason and leaves the source
// up: the read succeeded.
func TestSourcesUnknown(t *testing.T) {
	s := NewSources(prometheus.NewRegistry(), clocktesting.NewFakePassiveClock(time.Unix(100, 0)), time.Minute)
	s.Register("azure-scheduled-events")
	s.Success("azure-scheduled-events")
	s.Unknown("azure-scheduled-events")
	s.Unknown("azure-scheduled-events")
	if got := testutil.ToFloat64(s.metrics.errors.WithLabelValues("azure-scheduled-events", ReasonUnknownValue)); got != 2 {
		t.Errorf("errors{unknown_value} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.metrics.up.WithLabelValues("azure-scheduled-events")); got != 1 {
		t.Errorf("up = %v after unknown values, want 1", got)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

type countingHealth struct {
	interruption.DiscardHealth
	n map[string]int
}

func (c *countingHealth) Unknown(source string) { c.n[source]++ }

// Each unknown value is counted on every answer that holds it, and logged
// when it first appears.
func TestUnknownsReport(t *testing.T) {
	var logs bytes.Buffer
	h := &countingHealth{n: map[string]int{}}
	u := NewUnknowns("imds-scheduled-maintenance", h, slog.New(slog.NewTextHandler(&logs, nil)))
	postponed := UnknownValue{Entry: "instance-event-1", Field: "State", Value: "postponed"}
	long := UnknownValue{Entry: "instance-event-2", Field: "State", Value: strings.Repeat("x", 500)}

	u.Report([]UnknownValue{postponed})
	u.Report([]UnknownValue{postponed, long})
	u.Report([]UnknownValue{postponed, long})
	u.Report(nil)
	u.Report([]UnknownValue{postponed}) // gone, then back: logged again

	if got := h.n["imds-scheduled-maintenance"]; got != 6 {
		t.Errorf("counted %d, want 6 (one per value per answer)", got)
	}
	l := logs.String()
	if c := strings.Count(l, "value=postponed"); c != 2 {
		t.Errorf("postponed logged %d times, want 2:\n%s", c, l)
	}
	if c := strings.Count(l, "entry=instance-event-2"); c != 1 || strings.Contains(l, strings.Repeat("x", 65)) {
		t.Errorf("the long value logged %d times, or not cut:\n%s", c, l)
	}
	if !strings.Contains(l, "source=imds-scheduled-maintenance") || !strings.Contains(l, "field=State") {
		t.Errorf("the log does not name the source and field:\n%s", l)
	}

	// A reporter that does not count them: logged only.
	var quiet bytes.Buffer
	NewUnknowns("s", interruption.DiscardHealth{}, slog.New(slog.NewTextHandler(&quiet, nil))).Report([]UnknownValue{postponed})
	if !strings.Contains(quiet.String(), "postponed") {
		t.Error("not logged without a counter")
	}
}
