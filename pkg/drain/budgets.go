package drain

import (
	"context"
	"log/slog"
	"sync"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// budgetWatch watches, during one drain only, the PodDisruptionBudgets of
// the namespaces whose pods it was refused to evict, so that a blocked pod
// is retried as soon as its budget may allow it (a replacement became
// Ready and the disruption controller raised disruptionsAllowed), rather
// than at the end of a backoff. A namespace is watched from the first 429
// of one of its pods until the drain ends.
type budgetWatch struct {
	ctx    context.Context
	client kubernetes.Interface
	log    *slog.Logger

	mu     sync.Mutex
	byNS   map[string]*notifier
	cancel []context.CancelFunc
}

func newBudgetWatch(ctx context.Context, client kubernetes.Interface, log *slog.Logger) *budgetWatch {
	return &budgetWatch{ctx: ctx, client: client, log: log, byNS: map[string]*notifier{}}
}

// changed returns a channel closed at the next change of a budget in ns,
// starting to watch ns if it is not watched yet.
func (w *budgetWatch) changed(ns string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := w.byNS[ns]
	if !ok {
		n = &notifier{}
		n.init()
		w.byNS[ns] = n
		ctx, cancel := context.WithCancel(w.ctx)
		w.cancel = append(w.cancel, cancel)
		w.watch(ctx, ns, n)
	}
	return n.wait()
}

// watch runs an informer of the budgets of ns until ctx ends; every change
// it sees wakes the waiters.
func (w *budgetWatch) watch(ctx context.Context, ns string, n *notifier) {
	lw := cache.NewListWatchFromClient(w.client.PolicyV1().RESTClient(), "poddisruptionbudgets", ns, fields.Everything())
	inf := cache.NewSharedIndexInformer(lw, &policyv1.PodDisruptionBudget{}, 0, cache.Indexers{})
	// Only the change matters, not the budget: keep nothing but its name.
	_ = inf.SetTransform(func(obj any) (any, error) {
		if b, ok := obj.(*policyv1.PodDisruptionBudget); ok {
			return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: b.Name, Namespace: b.Namespace, ResourceVersion: b.ResourceVersion}}, nil
		}
		return obj, nil
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { n.broadcast() },
		UpdateFunc: func(any, any) { n.broadcast() },
		DeleteFunc: func(any) { n.broadcast() },
	})
	w.log.Debug("watching PodDisruptionBudgets while the drain lasts", "namespace", ns)
	go inf.RunWithContext(ctx)
}

// stop ends every watch.
func (w *budgetWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.cancel {
		c()
	}
	w.cancel = nil
}
