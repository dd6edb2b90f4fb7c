package drain

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	duration  *prometheus.HistogramVec
	draining  prometheus.Gauge
	evictions *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	overdue   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "drain_duration_seconds",
			Help:    "Wall time of drains, from start until every evictable pod was gone or the drain ended, by kind and result (success, timeout, cancelled, failure, dry_run).",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 300, 600},
		}, []string{"kind", "result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "drains_in_progress",
			Help: "Drains running now.",
		}),
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
	reg.MustRegister(m.duration, m.draining, m.evictions, m.skipped, m.overdue)
	return m
}
