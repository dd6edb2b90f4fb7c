package drain

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	duration  *prometheus.HistogramVec
	drains    *prometheus.CounterVec
	draining  prometheus.Gauge
	evictions *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	overdue   prometheus.Counter
	late      prometheus.Counter
	overrides *prometheus.CounterVec
	gates     *prometheus.CounterVec
	gateWait  prometheus.Histogram
	spread    *prometheus.CounterVec
}

// newMetrics registers the package's metrics; deadlineUsed is read at each
// scrape.
func newMetrics(reg prometheus.Registerer, deadlineUsed func() float64) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "drain_duration_seconds",
			Help:    "Wall time of drains, from start until every evictable pod was gone or the drain ended, by kind and result (success, timeout, cancelled, failure, dry_run).",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 300, 600},
		}, []string{"kind", "result"}),
		drains: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "drains_total",
			Help: "Drains ended, by result (success, timeout, cancelled, failure, dry_run).",
		}, []string{"result"}),
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
			Help: "Pods a drain left in place, by rule (mirror, self, annotated: lastcall.io/skip-eviction, daemonset, completed).",
		}, []string{"rule"}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "pods_late_total",
			Help: "Pods found on a node once its drain had evicted what its cache showed (bound to it just before the hold), and evicted too.",
		}),
		overdue: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "pods_remaining_at_deadline_total",
			Help: "Pods still on a node when its drain deadline passed.",
		}),
	}
	m.overrides = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "pdb_overrides_total",
		Help: "Pods deleted despite their PodDisruptionBudget at the last moment they could still shut down gracefully " +
			"(--pdb-deadline-policy=graceful-override), by outcome (deleted, error).",
	}, []string{"outcome"})
	m.overrides.WithLabelValues("deleted")
	m.overrides.WithLabelValues("error")
	m.gates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "serving_gate", Name: "withdrawals_total",
		Help: "Pods with the lastcall.io/serving readiness gate that a drain stopped serving before evicting them, by outcome: " +
			"left (the endpoint left its EndpointSlices), timeout (it had not when the pod had to go), error (the gate could not be set).",
	}, []string{"outcome"})
	for _, o := range []string{"left", "timeout", "error"} {
		m.gates.WithLabelValues(o)
	}
	m.gateWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "serving_gate", Name: "endpoint_removal_seconds",
		Help:    "Time from a gated pod's withdrawal to its endpoint leaving its EndpointSlices.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	m.spread = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "drain_service_waits_total",
		Help: "Pods a drain held back because their Service had no other ready endpoint off the node, by how the wait ended: " +
			"ready-elsewhere (a replacement became ready elsewhere), timeout (the pod had to go anyway).",
	}, []string{"outcome"})
	m.spread.WithLabelValues("ready-elsewhere")
	m.spread.WithLabelValues("timeout")
	used := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "drain_deadline_used_ratio",
		Help: "Of the drains running now, the largest share of its window (start to deadline) already spent: 0 when none runs, 1 at the deadline.",
	}, deadlineUsed)
	// Every series exists from the start, at zero, so that the first
	// failure or 429 is an increase an alert sees.
	for _, o := range Outcomes {
		if o != NodeGone { // a drain alone never ends so
			m.drains.WithLabelValues(o.Label())
		}
	}
	for _, c := range []string{"201", "404", "409", "429", "error"} {
		m.evictions.WithLabelValues(c)
	}
	reg.MustRegister(m.duration, m.drains, m.draining, m.evictions, m.skipped, m.overdue, m.late, m.overrides, m.gates, m.gateWait, m.spread, used)
	return m
}
