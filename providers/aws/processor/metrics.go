package processor

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	received *prometheus.CounterVec
	lag      prometheus.Histogram
	actions  *prometheus.CounterVec
	// completions counts lifecycle actions completed, by result and by
	// whether the node's drain had finished.
	completions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_received_total",
			Help: "Messages received, by kind (spot-interruption, rebalance-recommendation, scheduled-change, instance-state-change, capacity-reservation-interruption, asg-terminate, asg-launch, asg-test-notification, unknown, unparsable).",
		}, []string{"kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "queue", Name: "lag_seconds",
			Help:    "Time from an event happening to lastcall receiving its message.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
		}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "actions_total",
			Help: "Actions taken on nodes (cordon, drain, complete_launch), by result.",
		}, []string{"action", "result"}),
		completions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "lifecycle", Name: "completions_total",
			Help: "Lifecycle actions completed by lastcall, by result (CONTINUE, ABANDON) and drain: finished (the node was drained first), " +
				"unfinished (the drain failed or timed out and the instance goes anyway), not_applicable (a launch, or no node ran the instance).",
		}, []string{"result", "drain"}),
	}
	for _, r := range []string{Continue, Abandon} {
		for _, d := range []string{drainFinished, drainUnfinished, drainNotApplicable} {
			m.completions.WithLabelValues(r, d)
		}
	}
	reg.MustRegister(m.received, m.lag, m.actions, m.completions)
	return m
}
