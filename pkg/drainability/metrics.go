package drainability

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lastcall/lastcall/pkg/plan"
)

const namespace = "lastcall"

type metrics struct {
	blockers    *prometheus.GaugeVec
	evaluations prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		blockers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "drain_blockers",
			Help: "Pods on the node that would block or degrade a drain of it started now, by reason (" + reasonList() + "). " +
				"Unlike lastcall's other metrics it has a node label: one series per reason for each node of the cluster, exported by the one process that keeps every node's drainability " +
				"(the queue processor, or --mode=drainability); a node's series go with the node.",
		}, []string{"node", "reason"}),
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "drainability_evaluations_total",
			Help: "Evaluations of a node's drainability (a plan of its drain against the deadline window), after pod, PodDisruptionBudget or Service changes and at each resync.",
		}),
	}
	reg.MustRegister(m.blockers, m.evaluations)
	return m
}

func reasonList() string {
	s := ""
	for i, r := range plan.Reasons {
		if i > 0 {
			s += ", "
		}
		s += string(r)
	}
	return s
}
