package traffic

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Outcome is what became of one request: one of a small, fixed set.
type Outcome string

// The outcomes, in the order Summary.String lists them.
const (
	// OK is a 2xx answer whose body was read to its end.
	OK Outcome = "ok"
	// Status502, Status503 and Status504 are answers with that code.
	Status502 Outcome = "502"
	Status503 Outcome = "503"
	Status504 Outcome = "504"
	// Status5xx is any other 5xx answer.
	Status5xx Outcome = "5xx"
	// Refused is a connection refused.
	Refused Outcome = "refused"
	// Reset is a connection reset, or closed (EOF) before the answer was
	// read to its end, on a new or a kept-alive connection.
	Reset Outcome = "reset"
	// Timeout is a request not answered, body included, within the
	// request timeout.
	Timeout Outcome = "timeout"
	// Other is anything else: an answer that is neither 2xx nor 5xx, or an
	// error of another kind.
	Other Outcome = "other"
)

// Outcomes lists every outcome, in a fixed order.
var Outcomes = []Outcome{OK, Status502, Status503, Status504, Status5xx, Refused, Reset, Timeout, Other}

// Result is one request's outcome, as given to an observer.
type Result struct {
	// Seq numbers the requests from 0 in the order they were sent.
	Seq int
	// Start is when the request was sent, by the load generator's clock.
	Start time.Time
	// Latency is from sending to the end of the answer's body, or to the
	// error.
	Latency time.Duration
	// Outcome is what became of it.
	Outcome Outcome
	// Code is the HTTP status code, or 0 if there was no answer.
	Code int
	// Reused says the request went on a kept-alive connection.
	Reused bool
	// Err is the error, or nil for an answer read to its end.
	Err error
}

// Summary is what a load generator's run did.
type Summary struct {
	// Sent is how many requests were sent; every one has an outcome.
	Sent int
	// Counts is how many requests had each outcome (absent: none).
	Counts map[Outcome]int
	// ResetReused is how many of the Reset outcomes happened on a
	// kept-alive connection: those Go's transport would have retried
	// silently on a new connection had the load generator let it.
	ResetReused int
	// P50, P99 and Max are latencies over every request, failed ones
	// included (a timed-out request counts its timeout).
	P50, P99, Max time.Duration
	// Elapsed is from the first request sent to the last one's outcome.
	Elapsed time.Duration
	// Examples holds the first error seen for each failed outcome, to tell
	// what happened.
	Examples map[Outcome]string
}

// Failed is how many requests had any outcome but OK.
func (s Summary) Failed() int {
	return s.Sent - s.Counts[OK]
}

// String is a one-line summary: what was sent, each outcome seen, and the
// latencies.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent=%d failed=%d", s.Sent, s.Failed())
	for _, o := range Outcomes {
		if n := s.Counts[o]; n > 0 {
			fmt.Fprintf(&b, " %s=%d", o, n)
		}
	}
	if s.ResetReused > 0 {
		fmt.Fprintf(&b, " (reset on kept-alive=%d)", s.ResetReused)
	}
	fmt.Fprintf(&b, " p50=%s p99=%s max=%s in %s", s.P50, s.P99, s.Max, s.Elapsed.Round(time.Millisecond))
	return b.String()
}

// summarize sums up results. elapsed is the run's duration.
func summarize(results []Result, elapsed time.Duration) Summary {
	s := Summary{
		Sent:     len(results),
		Counts:   map[Outcome]int{},
		Examples: map[Outcome]string{},
		Elapsed:  elapsed,
	}
	latencies := make([]time.Duration, 0, len(results))
	for _, r := range results {
		s.Counts[r.Outcome]++
		if r.Outcome == Reset && r.Reused {
			s.ResetReused++
		}
		if _, seen := s.Examples[r.Outcome]; !seen && r.Outcome != OK {
			s.Examples[r.Outcome] = describe(r)
		}
		latencies = append(latencies, r.Latency)
	}
	slices.Sort(latencies)
	s.P50, s.P99 = percentile(latencies, 50), percentile(latencies, 99)
	if n := len(latencies); n > 0 {
		s.Max = latencies[n-1]
	}
	return s
}

// describe says what happened to a failed request.
func describe(r Result) string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return fmt.Sprintf("HTTP %d", r.Code)
}

// percentile is the nearest-rank percentile p of sorted latencies, or 0 if
// there are none.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}
