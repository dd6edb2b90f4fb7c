// Package kubemetrics exports client-go's count of Kubernetes API requests
// as lastcall_kube_requests_total{method, code}.
package kubemetrics

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/metrics"
)

// client-go takes one set of metric hooks per process, read by every
// request without a lock: the counter behind them is process-wide too.
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

// Install hooks client-go's request results into the counter. Call it at
// the start of the process, before any Kubernetes client makes a request:
// client-go reads its hooks unguarded.
func Install() {
	once.Do(func() { metrics.Register(metrics.RegisterOpts{RequestResult: result{}}) })
}

// Register adds the counter to reg. It counts only once Install has run.
func Register(reg prometheus.Registerer) error {
	if err := reg.Register(requests); err != nil {
		if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
			return err
		}
	}
	return nil
}
