package lifecycle

import "github.com/prometheus/client_golang/prometheus"

const (
	namespace = "lastcall"
	subsystem = "lifecycle"
)

// The outcomes of a call, a bounded label.
const (
	outcomeSuccess = "success"
	// outcomeGone: Auto Scaling answered ValidationError, the action is
	// no longer active.
	outcomeGone = "gone"
	// outcomeError: any other failure (after the SDK's own retries).
	outcomeError = "error"
)

// metrics are the package's metrics. Labels are bounded: results and
// outcomes only, never instance IDs or tokens.
type metrics struct {
	completed  *prometheus.CounterVec
	heartbeats *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "actions_completed_total",
			Help: "CompleteLifecycleAction calls (each with the SDK's retries inside), by result (CONTINUE, ABANDON) " +
				"and outcome (success; gone: the action was no longer active; error: retried with backoff).",
		}, []string{"result", "outcome"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "heartbeats_total",
			Help: "RecordLifecycleActionHeartbeat calls, by outcome (success; gone: the action was no longer active, " +
				"heartbeats stop; error: retried at the next interval).",
		}, []string{"outcome"}),
	}
	// Every series exists from the start, at zero.
	for _, o := range []string{outcomeSuccess, outcomeGone, outcomeError} {
		m.heartbeats.WithLabelValues(o)
		for _, r := range []Result{Continue, Abandon} {
			m.completed.WithLabelValues(string(r), o)
		}
	}
	if reg != nil {
		reg.MustRegister(m.completed, m.heartbeats)
	}
	return m
}
