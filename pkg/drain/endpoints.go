package drain

import (
	"context"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// endpointWatch is a drain's view of the EndpointSlices of the namespaces
// of its gated pods: whether a pod is still a ready endpoint of a
// Service. A namespace is watched from its first gated pod until the
// drain ends, so the agent's cost outside a drain does not grow with the
// cluster.
type endpointWatch struct {
	ctx    context.Context
	client kubernetes.Interface

	mu     sync.Mutex
	byNS   map[string]cache.SharedIndexInformer
	notify notifier
	wg     sync.WaitGroup
	stopFn context.CancelFunc
}

const targetUIDIndex = "targetRef.uid"

func newEndpointWatch(ctx context.Context, client kubernetes.Interface) *endpointWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &endpointWatch{ctx: ctx, client: client, byNS: map[string]cache.SharedIndexInformer{}, stopFn: cancel}
	w.notify.init()
	return w
}

// ready reports whether the pod of uid in ns is a ready endpoint of some
// EndpointSlice, and whether the namespace's slices are known yet; it
// starts watching ns on first use. changed is closed at the next change.
func (w *endpointWatch) ready(ns string, uid types.UID) (ready, synced bool, changed <-chan struct{}) {
	changed = w.notify.wait()
	inf := w.informer(ns)
	if !inf.HasSynced() {
		return false, false, changed
	}
	objs, _ := inf.GetIndexer().ByIndex(targetUIDIndex, string(uid))
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.UID == uid && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				return true, true, changed
			}
		}
	}
	return false, true, changed
}

func (w *endpointWatch) informer(ns string) cache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	if inf, ok := w.byNS[ns]; ok {
		return inf
	}
	slices := w.client.DiscoveryV1().EndpointSlices(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return slices.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return slices.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, w.client), &discoveryv1.EndpointSlice{}, 0, cache.Indexers{targetUIDIndex: func(obj any) ([]string, error) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		var uids []string
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.UID != "" {
				uids = append(uids, string(ep.TargetRef.UID))
			}
		}
		return uids, nil
	}})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.notify.broadcast() },
		UpdateFunc: func(any, any) { w.notify.broadcast() },
		DeleteFunc: func(any) { w.notify.broadcast() },
	})
	w.byNS[ns] = inf
	w.wg.Go(func() { inf.RunWithContext(w.ctx) })
	w.wg.Go(func() {
		if cache.WaitForCacheSync(w.ctx.Done(), inf.HasSynced) {
			w.notify.broadcast()
		}
	})
	return inf
}

// stop ends every watch and waits for them.
func (w *endpointWatch) stop() {
	w.stopFn()
	w.wg.Wait()
}
