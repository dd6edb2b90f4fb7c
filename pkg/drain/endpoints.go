package drain

import (
	"context"
	"slices"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// endpointWatch is a drain's view of the EndpointSlices of the namespaces
// of its pods: whether a pod is still a ready endpoint of a Service, and
// how many ready endpoints a Service has on other nodes. A namespace is
// watched from its first pod's eviction until the drain ends, so the
// agent's cost outside a drain does not grow with the cluster.
type endpointWatch struct {
	ctx    context.Context
	client kubernetes.Interface

	clock clock.PassiveClock

	mu      sync.Mutex
	byNS    map[string]cache.SharedIndexInformer
	started map[string]time.Time
	notify  notifier
	wg      sync.WaitGroup
	stopFn  context.CancelFunc
}

const (
	targetUIDIndex = "targetRef.uid"
	serviceIndex   = "service"
)

// syncTimeout is how long a namespace's EndpointSlices may take to be
// listed: past it (the list refused, say, for want of the permission) a
// drain goes on as if the namespace had no Service.
const syncTimeout = 5 * time.Second

func newEndpointWatch(ctx context.Context, client kubernetes.Interface, clk clock.PassiveClock) *endpointWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &endpointWatch{ctx: ctx, client: client, clock: clk, byNS: map[string]cache.SharedIndexInformer{}, started: map[string]time.Time{}, stopFn: cancel}
	w.notify.init()
	return w
}

// serves reports whether the pod of uid in ns is a ready endpoint of some
// EndpointSlice, and whether the namespace's slices are known yet; it
// starts watching ns on first use. changed is closed at the next change.
func (w *endpointWatch) serves(ns string, uid types.UID) (ready, synced bool, changed <-chan struct{}) {
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
			if ep.TargetRef != nil && ep.TargetRef.UID == uid && isReady(ep) {
				return true, true, changed
			}
		}
	}
	return false, true, changed
}

// services are the Services of ns whose EndpointSlices list the pod of
// uid as a ready endpoint; synced is false while ns's slices are not known
// yet.
func (w *endpointWatch) services(ns string, uid types.UID) (names []string, synced bool) {
	inf := w.informer(ns)
	if !inf.HasSynced() {
		return nil, false
	}
	objs, _ := inf.GetIndexer().ByIndex(targetUIDIndex, string(uid))
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.UID == uid && isReady(ep) && !slices.Contains(names, s.Labels[discoveryv1.LabelServiceName]) {
				names = append(names, s.Labels[discoveryv1.LabelServiceName])
			}
		}
	}
	return names, true
}

// readyElsewhere counts the ready endpoints of Service svc of ns on nodes
// other than node.
func (w *endpointWatch) readyElsewhere(ns, svc, node string) int {
	objs, _ := w.informer(ns).GetIndexer().ByIndex(serviceIndex, svc)
	seen := map[types.UID]bool{}
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			if !isReady(ep) || ep.NodeName == nil || *ep.NodeName == node || ep.TargetRef == nil || seen[ep.TargetRef.UID] {
				continue
			}
			seen[ep.TargetRef.UID] = true
		}
	}
	return len(seen)
}

// isReady says whether an endpoint is ready (unset means ready).
func isReady(ep discoveryv1.Endpoint) bool { return ep.Conditions.Ready == nil || *ep.Conditions.Ready }

func (w *endpointWatch) informer(ns string) cache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	if inf, ok := w.byNS[ns]; ok {
		return inf
	}
	client := w.client.DiscoveryV1().EndpointSlices(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, w.client), &discoveryv1.EndpointSlice{}, 0, cache.Indexers{serviceIndex: func(obj any) ([]string, error) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
			return []string{s.Labels[discoveryv1.LabelServiceName]}, nil
		}
		return nil, nil
	}, targetUIDIndex: func(obj any) ([]string, error) {
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
	w.started[ns] = w.clock.Now()
	w.wg.Go(func() { inf.RunWithContext(w.ctx) })
	w.wg.Go(func() {
		// At once, not at cache.WaitForCacheSync's next 100 ms poll: a
		// pod's eviction waits for this.
		select {
		case <-inf.HasSyncedChecker().Done():
			w.notify.broadcast()
		case <-w.ctx.Done():
		}
	})
	return inf
}

// unknown says whether ns's EndpointSlices could not be listed within
// syncTimeout.
func (w *endpointWatch) unknown(ns string) bool {
	inf := w.informer(ns)
	w.mu.Lock()
	started := w.started[ns]
	w.mu.Unlock()
	return !inf.HasSynced() && w.clock.Since(started) > syncTimeout
}

// stop ends every watch and waits for them.
func (w *endpointWatch) stop() {
	w.stopFn()
	w.wg.Wait()
}
