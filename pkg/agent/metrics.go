package agent

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	received       *prometheus.CounterVec
	actions        *prometheus.CounterVec
	noticeToCordon prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_received_total",
			Help: "Interruption events received, by source, kind and action (cordon, drain, cancel).",
		}, []string{"source", "kind", "action"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "actions_total",
			Help: "Actions taken on the node (cordon, drain, uncordon, acknowledge), by result (success, failure, timeout, cancelled, dry_run).",
		}, []string{"action", "result"}),
		noticeToCordon: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "notice_to_cordon_seconds",
			Help:    "Time from lastcall first seeing a notice to the node being cordoned.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
	}
	reg.MustRegister(m.received, m.actions, m.noticeToCordon)
	return m
}
