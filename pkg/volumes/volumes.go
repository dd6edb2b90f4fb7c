// Package volumes waits for the volumes attached to a node to be detached:
// a volume still attached to a dying instance cannot be attached to the
// node its pod moves to until the cloud frees it (about 6 minutes for an
// EBS volume whose instance is gone). Before the cloud takes the instance
// (a lifecycle action completed, an Azure event approved), lastcall waits
// for the node's VolumeAttachments to be detached, within the deadline.
package volumes

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// The outcomes of a wait, lastcall_volume_detach_waits_total's labels.
const (
	// OutcomeNone: nothing was attached to the node.
	OutcomeNone = "none"
	// OutcomeDetached: every attachment was detached in time.
	OutcomeDetached = "detached"
	// OutcomeDeadline: some were still attached at the bound.
	OutcomeDeadline = "deadline"
	// OutcomeError: the attachments could not be read; lastcall went on.
	OutcomeError = "error"
)

// Waiter waits for a node's VolumeAttachments to be detached.
type Waiter struct {
	client kubernetes.Interface
	clock  clock.WithTicker
	waits  *prometheus.CounterVec
	took   prometheus.Histogram
}

// New returns a Waiter, its metrics on reg.
func New(client kubernetes.Interface, reg prometheus.Registerer, clk clock.WithTicker) *Waiter {
	w := &Waiter{client: client, clock: clk,
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "lastcall", Name: "volume_detach_waits_total",
			Help: "Waits for a drained node's VolumeAttachments to be detached before the cloud may take the instance, by outcome " +
				"(none attached, detached, deadline: some still attached at the bound, error: they could not be read).",
		}, []string{"outcome"}),
		took: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "lastcall", Name: "volume_detach_seconds",
			Help:    "Time from the end of a drain to the last of its node's volumes detached.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
	}
	for _, o := range []string{OutcomeNone, OutcomeDetached, OutcomeDeadline, OutcomeError} {
		w.waits.WithLabelValues(o)
	}
	reg.MustRegister(w.waits, w.took)
	return w
}

// Result is how a wait ended.
type Result struct {
	Outcome string
	// Attached are the attachments found attached when the wait began, and
	// Left those still attached at its end, by VolumeAttachment name.
	Attached, Left []string
	Took           time.Duration
	Err            error
}

// Summary says it in a sentence, for an Event.
func (r Result) Summary() string {
	switch r.Outcome {
	case OutcomeNone:
		return "no volume attached to the node"
	case OutcomeDetached:
		return fmt.Sprintf("%d volume attachments detached in %s", len(r.Attached), r.Took.Round(time.Millisecond))
	case OutcomeDeadline:
		return fmt.Sprintf("%d of %d volume attachments still attached at the deadline (%s): the instance goes with them",
			len(r.Left), len(r.Attached), joinFirst(r.Left, 5))
	}
	return fmt.Sprintf("volume attachments could not be read: %v", r.Err)
}

// attached says whether a may hold a volume on node: until it is gone, or
// being deleted with status.attached false (the attacher has detached it
// and only its finalizer is left). One not attached yet may still attach.
func attached(a *storagev1.VolumeAttachment, node string) bool {
	return a.Spec.NodeName == node && (a.DeletionTimestamp == nil || a.Status.Attached)
}

// Wait returns once no VolumeAttachment of node is attached, or at until,
// or when ctx ends. It lists the attachments, then watches them. waiting,
// if not nil, is called once the first list has found some attached, as
// the wait begins.
func (w *Waiter) Wait(ctx context.Context, node string, until time.Time, waiting func()) Result {
	start := w.clock.Now()
	res := w.wait(ctx, node, until, waiting)
	res.Took = w.clock.Since(start)
	w.waits.WithLabelValues(res.Outcome).Inc()
	if res.Outcome == OutcomeDetached {
		w.took.Observe(res.Took.Seconds())
	}
	return res
}

func (w *Waiter) wait(ctx context.Context, node string, until time.Time, waiting func()) Result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := w.clock.NewTimer(max(until.Sub(w.clock.Now()), 0))
	defer timer.Stop()
	go func() {
		select {
		case <-timer.C():
			cancel()
		case <-ctx.Done():
		}
	}()

	var res Result
	onNode := map[string]bool{}
	left := func() []string {
		var l []string
		for name, on := range onNode {
			if on {
				l = append(l, name)
			}
		}
		slices.Sort(l)
		return l
	}
	for first := true; ; first = false {
		list, err := w.client.StorageV1().VolumeAttachments().List(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if first {
				return Result{Outcome: OutcomeError, Err: err}
			}
			select { // a watch that failed: list again shortly
			case <-ctx.Done():
			case <-w.clock.After(time.Second):
			}
			continue
		}
		clear(onNode)
		for i := range list.Items {
			if a := &list.Items[i]; attached(a, node) {
				onNode[a.Name] = true
			}
		}
		if first {
			res.Attached = left()
			if len(res.Attached) == 0 {
				return Result{Outcome: OutcomeNone}
			}
			if waiting != nil {
				waiting()
			}
		}
		if len(left()) == 0 {
			res.Outcome = OutcomeDetached
			return res
		}
		wi, err := w.client.StorageV1().VolumeAttachments().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		done := w.follow(ctx, wi, node, onNode, left)
		wi.Stop()
		if done {
			res.Outcome = OutcomeDetached
			return res
		}
		if ctx.Err() != nil {
			break
		}
	}
	res.Left = left()
	if len(res.Left) == 0 {
		res.Outcome = OutcomeDetached
		return res
	}
	res.Outcome = OutcomeDeadline
	return res
}

// follow applies wi's events to onNode until none is attached (true), or
// the watch ends (false).
func (w *Waiter) follow(ctx context.Context, wi watch.Interface, node string, onNode map[string]bool, left func() []string) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return false
			}
			switch ev.Type {
			case watch.Error:
				return false // expired, or failed: list again
			case watch.Deleted:
				if a, ok := ev.Object.(*storagev1.VolumeAttachment); ok {
					delete(onNode, a.Name)
				}
			case watch.Added, watch.Modified:
				if a, ok := ev.Object.(*storagev1.VolumeAttachment); ok {
					if attached(a, node) {
						onNode[a.Name] = true
					} else {
						delete(onNode, a.Name)
					}
				}
			}
			if len(left()) == 0 {
				return true
			}
		}
	}
}

func joinFirst(names []string, n int) string {
	s := ""
	for i, name := range names {
		if i == n {
			return s + fmt.Sprintf(", and %d more", len(names)-n)
		}
		if i > 0 {
			s += ", "
		}
		s += name
	}
	return s
}
