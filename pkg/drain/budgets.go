package drain

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// budgetWatch watches, during one drain only, the PodDisruptionBudgets of
// the namespaces whose pods it was refused to evict, so that a blocked pod
// is retried as soon as its budget may allow it (a replacement became
// Ready and the disruption controller raised disruptionsAllowed), rather
// than at the end of a backoff. A namespace is watched from the first 429
// of one of its pods until the drain ends. Only the changes matter, so it
// keeps no cache: a watch, opened again when it ends.
type budgetWatch struct {
	ctx    context.Context
	client kubernetes.Interface
	clock  clock.Clock
	log    *slog.Logger

	stopFn context.CancelFunc

	mu   sync.Mutex
	byNS map[string]*notifier
	wg   sync.WaitGroup
}

func newBudgetWatch(ctx context.Context, client kubernetes.Interface, clk clock.Clock, log *slog.Logger) *budgetWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &budgetWatch{client: client, clock: clk, log: log, byNS: map[string]*notifier{}}
	w.ctx = ctx
	w.stopFn = cancel
	return w
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
		w.wg.Go(func() { w.watch(ns, n) })
	}
	return n.wait()
}

// watch wakes n at every event of a budget of ns, until the drain ends. A
// watch opened without a resourceVersion starts by telling of every
// budget there: a wake too, which retries the pods once more.
func (w *budgetWatch) watch(ns string, n *notifier) {
	budgets := w.client.PolicyV1().PodDisruptionBudgets(ns)
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
	w.log.Debug("watching PodDisruptionBudgets while the drain lasts", "namespace", ns)
	for w.ctx.Err() == nil {
		wi, err := budgets.Watch(w.ctx, metav1.ListOptions{})
		if err != nil {
			pause := backoff.Step()
			w.log.Warn("watching PodDisruptionBudgets failed; blocked pods are retried on their backoff", "namespace", ns, "err", err, "retry_in", pause)
			select {
			case <-w.ctx.Done():
			case <-w.clock.After(pause):
			}
			continue
		}
		w.forward(wi, n)
	}
}

// forward wakes n at every event of wi until it ends or the drain does.
func (w *budgetWatch) forward(wi watch.Interface, n *notifier) {
	defer wi.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case _, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			n.broadcast()
		}
	}
}

// stop ends every watch and waits for them.
func (w *budgetWatch) stop() {
	w.stopFn()
	w.wg.Wait()
}
