package health

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	up          *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	errors      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "source", Name: "up",
			Help: "1 when the source's last attempt to read its signal succeeded, 0 when it failed.",
		}, []string{"source"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "source", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the source's last successful read of its signal.",
		}, []string{"source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "source", Name: "errors_total",
			Help: "Failed reads of a signal, by source and reason (unreachable, timeout, malformed, http_error, error); " +
				"and values in an answer lastcall does not know (unknown_value: the rest of the answer was used).",
		}, []string{"source", "reason"}),
	}
	reg.MustRegister(m.up, m.lastSuccess, m.errors)
	return m
}
