package lease

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

// Why a renewal failed, and why a lease was lost: bounded labels.
const (
	failureTimeout = "timeout" // no answer within what was left of the renew deadline
	failureError   = "error"

	lossDeadline = "deadline" // no renewal succeeded for the renew deadline
	lossTaken    = "taken"    // another replica holds it
)

type metrics struct {
	renewalFailures *prometheus.CounterVec
	losses          *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		renewalFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "lease", Name: "renewal_failures_total",
			Help: "Failed renewals of a per-node Lease this replica holds, by reason (timeout, error); each is retried until the renew deadline.",
		}, []string{"reason"}),
		losses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "lease", Name: "losses_total",
			Help: "Per-node Leases given up while in use, work on the node stopped, by reason: deadline (no renewal succeeded for the renew deadline), taken (another replica holds it).",
		}, []string{"reason"}),
	}
	for _, r := range []string{failureTimeout, failureError} {
		m.renewalFailures.WithLabelValues(r)
	}
	for _, r := range []string{lossDeadline, lossTaken} {
		m.losses.WithLabelValues(r)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.renewalFailures, m.losses)
}
