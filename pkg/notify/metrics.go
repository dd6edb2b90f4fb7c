package notify

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

// The results of a notification: a bounded label.
const (
	resultSent         = "sent"
	resultFailed       = "failed"
	resultDeduplicated = "deduplicated"
	resultDropped      = "dropped"
)

type metrics struct {
	notifications *prometheus.CounterVec
	duration      *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "notifications_total",
			Help: "Webhook notifications, by phase (received, finished) and result: sent, failed (after every attempt, or an invalid render), " +
				"deduplicated (the instance or node was already notified of in this phase), dropped (the queue was full, or shutdown came first).",
		}, []string{"phase", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "notification_duration_seconds",
			Help:    "Time to deliver a webhook notification, every attempt and wait included, by result (sent, failed).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30},
		}, []string{"result"}),
	}
	for _, p := range []Phase{PhaseReceived, PhaseFinished} {
		for _, r := range []string{resultSent, resultFailed, resultDeduplicated, resultDropped} {
			m.notifications.WithLabelValues(string(p), r)
		}
	}
	for _, r := range []string{resultSent, resultFailed} {
		m.duration.WithLabelValues(r)
	}
	reg.MustRegister(m.notifications, m.duration)
	return m
}

func (m *metrics) count(p Phase, result string) {
	m.notifications.WithLabelValues(string(p), result).Inc()
}
