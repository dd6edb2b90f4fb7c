package processor

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	received *prometheus.CounterVec
	lag      prometheus.Histogram
	actions  *prometheus.CounterVec
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
	}
	reg.MustRegister(m.received, m.lag, m.actions)
	return m
}
