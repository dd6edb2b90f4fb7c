// Package kubemetrics exports client-go's count of Kubernetes API requests
// as lastcall_kube_requests_total{method, code}.
package kubemetrics

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/metrics"
)

// client-go takes one set of metric hooks per process; the counter behind
// them is shared by every registry that asks for it.
var (
	once     sync.Once
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "lastcall", Name: "kube_requests_total",
		Help: "Kubernetes API requests made, by HTTP method and status code (\"<error>\" when no response came).",
	}, []string{"method", "code"})
)

type result struct{}

func (result) Increment(_ context.Context, code, method, _ string) {
	requests.WithLabelValues(method, code).Inc()
}

// Register hooks client-go's request results into the counter and
// registers it with reg.
func Register(reg prometheus.Registerer) error {
	once.Do(func() { metrics.Register(metrics.RegisterOpts{RequestResult: result{}}) })
	if err := reg.Register(requests); err != nil {
		if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
			return err
		}
	}
	return nil
}
