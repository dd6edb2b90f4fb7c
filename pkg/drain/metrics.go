package drain

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	evictions *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	overdue   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "evictions_total",
			Help: "Eviction API calls by HTTP status code (201 evicted, 404 already gone, 409 replaced, 429 blocked by a PodDisruptionBudget); \"error\" when no response came.",
		}, []string{"code"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "pods_skipped_total",
			Help: "Pods a drain left in place, by rule (mirror, self, daemonset, completed).",
		}, []string{"rule"}),
		overdue: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "pods_remaining_at_deadline_total",
			Help: "Pods still on a node when its drain deadline passed.",
		}),
	}
	reg.MustRegister(m.evictions, m.skipped, m.overdue)
	return m
}
