package queue

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/messages"
)

const namespace = "lastcall"

type metrics struct {
	received   prometheus.Counter
	deleted    *prometheus.CounterVec
	released   *prometheus.CounterVec
	requeued   *prometheus.CounterVec
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
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_requeued_total",
			Help: "Fresh copies of messages sent on one of their last receives, for another replica to take up, by why the work failed here (lease-failed, lookup-failed, lease-lost, stopping, ...).",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "errors_total",
			Help: "Failed SQS calls, by operation (receive, delete, change_visibility, get_attributes, send).",
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
	reg.MustRegister(m.received, m.deleted, m.released, m.requeued, m.errors, m.extensions, m.inFlight)
	return m
}

// processorMetrics are the Handler's.
type processorMetrics struct {
	// outOfService counts the out-of-service taints put on the nodes of
	// terminated instances, by outcome.
	outOfService *prometheus.CounterVec
	received     *prometheus.CounterVec
	lag          prometheus.Histogram
	// completions counts lifecycle actions completed, by result and by
	// whether the node's drain had finished.
	completions *prometheus.CounterVec
	waits       *prometheus.CounterVec
	// withdrawn counts the notices withdrawn, by message kind.
	withdrawn *prometheus.CounterVec
	// handedOver counts the drains whose node carries them on, by message
	// kind; takenUp the carried notices taken up by a replica.
	handedOver *prometheus.CounterVec
	takenUp    prometheus.Counter
}

func newProcessorMetrics(reg prometheus.Registerer) *processorMetrics {
	m := &processorMetrics{
		outOfService: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "out_of_service_taints_total",
			Help: "Nodes of terminated instances marked node.kubernetes.io/out-of-service (--out-of-service-taint), by outcome (added, present: already there, error).",
		}, []string{"outcome"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "messages_received_total",
			Help: "Messages received, by kind (spot-interruption, rebalance-recommendation, scheduled-change, instance-state-change, capacity-reservation-interruption, asg-terminate, asg-launch, asg-test-notification, unknown, unparsable).",
		}, []string{"kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "queue", Name: "lag_seconds",
			Help:    "Time from an event happening to lastcall receiving its message, on its first receive.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900},
		}),
		completions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "lifecycle", Name: "completions_total",
			Help: "Lifecycle actions completed by lastcall, by result (CONTINUE, ABANDON) and drain: finished (the node was drained first), " +
				"unfinished (the drain failed, timed out or its node went, and the instance goes anyway), not_applicable (a launch, no node ran the instance, or --cordon-only).",
		}, []string{"result", "drain"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "waits_total",
			Help: "Times a message's work waited with the message in flight for a condition expected to clear, by reason: node-not-joined, node-not-ready, node-busy always; " +
				"any other (lease-failed, lookup-failed, lease-lost, ...) once the message has no receive to spare before the queue's redrive policy.",
		}, []string{"reason"}),
		withdrawn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "queue", Name: "notices_withdrawn_total",
			Help: "Notices the queue processor withdrew, releasing its own holds, by kind: scheduled-change (the Health event closed or was canceled), " +
				"instance-state-change (the instance runs again after it stopped), rebalance-recommendation (held for --rebalance-hold).",
		}, []string{"kind"}),
	}
	m.handedOver = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "queue", Name: "handed_over_total",
		Help: "Drains that outlived their message's longest time in flight (--max-in-flight), handed over to their node, which carries them on, by message kind.",
	}, []string{"kind"})
	m.takenUp = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "queue", Name: "carried_taken_up_total",
		Help: "Notices carried by their node alone that this replica took up because no replica worked on them (the one carrying them had stopped).",
	})
	for _, k := range []string{messages.KindScheduledChange, messages.KindStateChange, messages.KindRebalance} {
		m.withdrawn.WithLabelValues(k)
	}
	for _, r := range []lifecycle.Result{lifecycle.Continue, lifecycle.Abandon} {
		for _, d := range []string{drainFinished, drainUnfinished, drainNotApplicable} {
			m.completions.WithLabelValues(string(r), d)
		}
	}
	for _, o := range []string{"added", "present", "error"} {
		m.outOfService.WithLabelValues(o)
	}
	reg.MustRegister(m.received, m.lag, m.completions, m.waits, m.withdrawn, m.handedOver, m.takenUp, m.outOfService)
	return m
}
