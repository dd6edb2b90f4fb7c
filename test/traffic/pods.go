package traffic

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodBalancerConfig says which Service a PodBalancer serves and how.
type PodBalancerConfig struct {
	// Namespace and Service name the Service.
	Namespace, Service string
	// Resolve gives the host:port to dial for an endpoint's targetRef, or
	// false if there is none. The host must be an IP of 127.0.0.0/8: the
	// endpoints' own addresses are never dialled. It is called for every
	// request and must be safe for concurrent use.
	Resolve func(ref *corev1.ObjectReference) (hostport string, ok bool)
	// PropagationDelay is how long after an EndpointSlice changes the
	// change takes effect (0: at once).
	PropagationDelay time.Duration
	// Proxy holds the settings common to both balancers.
	Proxy ProxyConfig
}

// PodBalancer is a reverse proxy for one Service's ready endpoints, as an
// ingress controller or kube-proxy is. See StartPodBalancer.
type PodBalancer struct {
	balancer
	cfg PodBalancerConfig

	mu sync.Mutex
	// slices holds, by EndpointSlice key, the ready endpoints applied.
	slices map[string]map[string]*corev1.ObjectReference
	// refs holds every ready endpoint applied, by backend name.
	refs map[string]*corev1.ObjectReference
	// known holds every endpoint ever applied, by backend name: a request
	// that chose a backend just before it was removed still reaches it,
	// as through a real proxy, rather than failing to resolve it.
	known map[string]*corev1.ObjectReference
}

// StartPodBalancer starts a reverse proxy on 127.0.0.1 for a Service. It
// follows the Service's EndpointSlices (label kubernetes.io/service-name)
// and sends each request, round-robin, to the next endpoint that is ready
// (conditions.ready true or unset, as the API says to read it) and has a
// targetRef. A change of an EndpointSlice takes effect PropagationDelay
// after the balancer sees it; the slices there at start take effect at
// once. It answers 503 with no endpoint, 502 when the endpoint refuses or
// breaks the connection or has no address, 504 when it does not answer
// within the upstream timeout. It returns once the first list of the
// EndpointSlices is applied, and stops when ctx ends.
func StartPodBalancer(ctx context.Context, client kubernetes.Interface, cfg PodBalancerConfig) (*PodBalancer, error) {
	if cfg.Namespace == "" || cfg.Service == "" || cfg.Resolve == nil {
		return nil, errors.New("a pod balancer needs a namespace, a service and a resolver")
	}
	b := &PodBalancer{
		cfg:    cfg,
		slices: map[string]map[string]*corev1.ObjectReference{},
		refs:   map[string]*corev1.ObjectReference{},
		known:  map[string]*corev1.ObjectReference{},
	}
	b.balancer = newBalancer(cfg.Proxy, b.target, "source", "pod-balancer", "service", cfg.Namespace+"/"+cfg.Service)
	endpointSlices := func(f informers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Discovery().V1().EndpointSlices().Informer()
	}
	selector := discoveryv1.LabelServiceName + "=" + cfg.Service
	if err := b.start(ctx, client, cfg.Namespace, selector, endpointSlices, b.observe); err != nil {
		return nil, err
	}
	return b, nil
}

// Backends lists the endpoints requests now go to, by targetRef
// (namespace/name), sorted.
func (b *PodBalancer) Backends() []string { return b.fwd.list() }

// observe takes an EndpointSlice as the informer saw it (nil if deleted)
// and applies it after the propagation delay, or at once if it was there
// at start.
func (b *PodBalancer) observe(key string, obj any, initial bool) {
	var ready map[string]*corev1.ObjectReference
	if slice, ok := obj.(*discoveryv1.EndpointSlice); ok {
		ready = readyEndpoints(slice)
	}
	delay := b.cfg.PropagationDelay
	if initial {
		delay = 0
	}
	b.queue.after(delay, func() { b.apply(key, ready) })
}

// apply sets the ready endpoints of one EndpointSlice (nil: deleted).
func (b *PodBalancer) apply(key string, ready map[string]*corev1.ObjectReference) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ready == nil {
		delete(b.slices, key)
	} else {
		b.slices[key] = ready
	}
	b.refs = map[string]*corev1.ObjectReference{}
	for _, s := range b.slices {
		maps.Copy(b.refs, s)
	}
	maps.Copy(b.known, b.refs)
	b.fwd.set(slices.Collect(maps.Keys(b.refs)))
}

// target resolves a backend's address.
func (b *PodBalancer) target(name string) (string, bool) {
	b.mu.Lock()
	ref := b.known[name]
	b.mu.Unlock()
	if ref == nil {
		return "", false
	}
	return b.cfg.Resolve(ref)
}

// readyEndpoints returns the ready endpoints of a slice that have a
// targetRef, by namespace/name of the target.
func readyEndpoints(slice *discoveryv1.EndpointSlice) map[string]*corev1.ObjectReference {
	ready := map[string]*corev1.ObjectReference{}
	for _, ep := range slice.Endpoints {
		if ep.TargetRef == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
			continue
		}
		ref := ep.TargetRef.DeepCopy()
		if ref.Namespace == "" {
			ref.Namespace = slice.Namespace
		}
		ready[ref.Namespace+"/"+ref.Name] = ref
	}
	return ready
}
