package episode

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lastcall/lastcall/pkg/drain"
)

const namespace = "lastcall"

type metrics struct {
	actions        *prometheus.CounterVec
	noticeToCordon prometheus.Histogram
	retargets      prometheus.Counter
	unreadable     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "actions_total",
			Help: "Actions taken on nodes, by action (cordon, drain, uncordon, complete) and result: for drain, how it ended " +
				"(success, timeout, cancelled, failure, dry_run, node_gone); for the others success, failure or dry_run.",
		}, []string{"action", "result"}),
		noticeToCordon: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "notice_to_cordon_seconds",
			Help:    "Time from lastcall first seeing a notice to the node being cordoned.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		retargets: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "drain_replans_total",
			Help: "Running drains re-planned to another deadline: a notice with an earlier deadline joined, or the earliest was withdrawn.",
		}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "node_state_unreadable_total",
			Help: "Holds and releases that found a node's lastcall.io/state annotation unreadable (not JSON, cut short, or from a newer lastcall): the node was taken anew.",
		}),
	}
	for _, a := range []string{"cordon", "uncordon", "complete"} {
		for _, r := range []string{"success", "failure"} {
			m.actions.WithLabelValues(a, r)
		}
	}
	for _, o := range drain.Outcomes {
		m.actions.WithLabelValues("drain", o.Label())
	}
	reg.MustRegister(m.actions, m.noticeToCordon, m.retargets, m.unreadable)
	return m
}
