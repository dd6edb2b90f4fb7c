package serving

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Pods is the Keeper's view of its node's pods.
type Pods interface {
	OnNode(node string) ([]*corev1.Pod, error)
	// Changed returns a channel closed at the next change of any pod.
	Changed() <-chan struct{}
}

// Keeper sets the gate True on the gated pods of one node, as they start
// and whenever it is found False, except on pods a drain withdrew
// (ReasonDraining) while that drain still runs.
type Keeper struct {
	client kubernetes.Interface
	pods   Pods
	node   string
	// draining says whether a drain of the node runs now.
	draining func() bool
	log      *slog.Logger
	clock    clock.Clock
	sets     *prometheus.CounterVec
	poke     chan struct{}
}

// NewKeeper returns the Keeper of node.
func NewKeeper(client kubernetes.Interface, pods Pods, node string, draining func() bool, reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) *Keeper {
	k := &Keeper{client: client, pods: pods, node: node, draining: draining, log: log, clock: clk, poke: make(chan struct{}, 1),
		sets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "lastcall", Subsystem: "serving_gate", Name: "sets_total",
			Help: "Pods whose lastcall.io/serving readiness gate the agent set True, by outcome (set, error).",
		}, []string{"outcome"})}
	k.sets.WithLabelValues("set")
	k.sets.WithLabelValues("error")
	reg.MustRegister(k.sets)
	return k
}

// Poke makes the Keeper look at its pods again: their node changed (a
// drain's hold was released).
func (k *Keeper) Poke() {
	select {
	case k.poke <- struct{}{}:
	default:
	}
}

// Run keeps the gates until ctx ends. A failed patch is tried again with
// a capped backoff, even if no pod changes meanwhile.
func (k *Keeper) Run(ctx context.Context) {
	backoff := newBackoff()
	for {
		changed := k.pods.Changed()
		var retry <-chan time.Time
		if !k.sync(ctx) {
			retry = k.clock.After(backoff.Step())
		} else {
			backoff = newBackoff()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-k.poke:
		case <-retry:
		}
	}
}

func newBackoff() wait.Backoff {
	return wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Cap: 10 * time.Second, Steps: 1 << 30}
}

// sync sets the gate True where it should be and is not; false if a patch
// failed.
func (k *Keeper) sync(ctx context.Context) bool {
	pods, err := k.pods.OnNode(k.node)
	if err != nil {
		return false
	}
	ok := true
	for _, p := range pods {
		if !k.wants(p) {
			continue
		}
		err := set(ctx, k.client, p, corev1.ConditionTrue, ReasonServing, "lastcall: the node is not being drained")
		switch {
		case err == nil:
			k.sets.WithLabelValues("set").Inc()
			k.log.Debug("serving gate set", "pod", p.Namespace+"/"+p.Name)
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Gone or replaced: the next change says more.
		default:
			ok = false
			k.sets.WithLabelValues("error").Inc()
			k.log.Warn("setting the serving gate failed; retrying", "pod", p.Namespace+"/"+p.Name, "err", err)
		}
	}
	return ok
}

// wants says whether p's gate should be set True now.
func (k *Keeper) wants(p *corev1.Pod) bool {
	if !Gated(p) || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	c := Condition(p)
	switch {
	case c == nil:
		return true
	case c.Status == corev1.ConditionTrue:
		return false
	case c.Reason == ReasonDraining:
		return !k.draining() // a drain withdrew it: it stays withdrawn while one runs
	default:
		return true
	}
}
