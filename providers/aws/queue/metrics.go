package queue

import "github.com/prometheus/client_golang/prometheus"

const namespace = "lastcall"

type metrics struct {
	received   prometheus.Counter
	deleted    *prometheus.CounterVec
	released   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	extensions prometheus.Counter
	inFlight   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "receives_total",
			Help: "Messages received from SQS, redeliveries included.",
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_deleted_total",
			Help: "Messages deleted, by reason: processed, or why they can never be processed (unparsable, not-our-cluster, unknown-instance, test-notification, ...).",
		}, []string{"reason"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_released_total",
			Help: "Messages left to reappear, by reason; \"redrive\" once they were received as often as --max-receives allows and are left to the queue's redrive policy.",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "errors_total",
			Help: "Failed SQS calls, by operation (receive, delete, change_visibility).",
		}, []string{"operation"}),
		extensions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "visibility_extensions_total",
			Help: "Visibility timeout extensions of messages whose work was still running.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_in_flight",
			Help: "Messages being worked on now.",
		}),
	}
	reg.MustRegister(m.received, m.deleted, m.released, m.errors, m.extensions, m.inFlight)
	return m
}
