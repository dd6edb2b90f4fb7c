package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestSourcesHealthAndSync(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(100, 0))
	reg := prometheus.NewRegistry()
	s := NewSources(reg, clk, 30*time.Second)
	s.Register("a")
	s.Register("b")
	if err := s.Check(); err != nil {
		t.Fatalf("within the start-up window: %v", err)
	}
	s.Success("a")
	select {
	case <-s.Synced():
		t.Fatal("synced before b read its signal")
	default:
	}
	s.Failure("b", "unreachable", errors.New("dial refused"))
	s.Success("b")
	select {
	case <-s.Synced():
	default:
		t.Fatal("not synced after every source succeeded")
	}
	clk.SetTime(time.Unix(131, 0))
	s.Success("a")
	s.Failure("b", "timeout", errors.New("deadline exceeded"))
	err := s.Check()
	if err == nil || !strings.Contains(err.Error(), "b: no successful read for 31s (last failure: timeout)") || strings.Contains(err.Error(), "a:") ||
		strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("Check: %v", err)
	}
	if got := testutil.ToFloat64(s.metrics.up.WithLabelValues("b")); got != 0 {
		t.Errorf("up{b} = %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.up.WithLabelValues("a")); got != 1 {
		t.Errorf("up{a} = %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.errors.WithLabelValues("b", "timeout")); got != 1 {
		t.Errorf("errors{b,timeout} = %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.lastSuccess.WithLabelValues("a")); got != 131 {
		t.Errorf("last success{a} = %v", got)
	}
}

func TestNeverSucceedingSourceGoesUnhealthy(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(100, 0))
	s := NewSources(prometheus.NewRegistry(), clk, 10*time.Second)
	s.Register("imds-spot")
	clk.SetTime(time.Unix(111, 0))
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "imds-spot") {
		t.Fatalf("Check: %v", err)
	}
}

// CheckRead fails for a source not read yet, whatever the start-up window.
func TestCheckRead(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(100, 0))
	s := NewSources(prometheus.NewRegistry(), clk, 30*time.Second)
	s.Register("imds-spot")
	s.Register("imds-rebalance")
	s.Success("imds-spot")
	s.Failure("imds-rebalance", "timeout", errors.New("deadline exceeded"))
	if err := s.Check(); err != nil {
		t.Fatalf("Check within the start-up window: %v", err)
	}
	err := s.CheckRead()
	if err == nil || !strings.Contains(err.Error(), "imds-rebalance: not read yet (last failure: timeout)") || strings.Contains(err.Error(), "imds-spot") ||
		strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("CheckRead: %v", err)
	}
	s.Success("imds-rebalance")
	if err := s.CheckRead(); err != nil {
		t.Fatalf("CheckRead once both were read: %v", err)
	}
	clk.SetTime(time.Unix(131, 0))
	if err := s.CheckRead(); err == nil || !strings.Contains(err.Error(), "no successful read for 31s") {
		t.Fatalf("CheckRead once stale: %v", err)
	}
}
