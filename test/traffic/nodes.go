package traffic

import (
	"context"
	"errors"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NodeBalancerConfig says which nodes a NodeBalancer sends to and how.
type NodeBalancerConfig struct {
	// Selector, a label selector, restricts the nodes (default: all).
	Selector string
	// Target gives the host:port to dial for a node, or false if there is
	// none. The host must be an IP of 127.0.0.0/8. It is called for every
	// request and must be safe for concurrent use.
	Target func(node string) (hostport string, ok bool)
	// DeregistrationDelay is how long a node that leaves (excluded by
	// label, not Ready, deleted) still gets new requests (0: none).
	DeregistrationDelay time.Duration
	// Proxy holds the settings common to both balancers.
	Proxy ProxyConfig
}

// NodeBalancer is a load balancer whose targets are nodes, as a cloud's
// load balancer in instance mode is. See StartNodeBalancer.
type NodeBalancer struct {
	balancer
	cfg NodeBalancerConfig

	mu    sync.Mutex
	nodes map[string]*nodeState
}

// nodeState is what the balancer knows of one node.
type nodeState struct {
	// eligible is what the node's last version said: it exists, is Ready
	// and is not excluded.
	eligible bool
	// registered says the node gets requests.
	registered bool
	// gen counts the changes of eligible, so that a deregistration
	// scheduled before the node came back is dropped.
	gen uint64
}

// StartNodeBalancer starts a load balancer on 127.0.0.1 whose targets are
// the nodes matching the selector. A node is registered as soon as the
// balancer sees it Ready without the label
// node.kubernetes.io/exclude-from-external-load-balancers. When the label
// appears, the node stops being Ready, stops matching the selector or is
// deleted, it keeps getting new requests for the deregistration delay, then
// none; requests in flight to it go on to their end (bounded by the
// upstream timeout). If it comes back within the delay, it stays. Each
// request goes, round-robin, to the next registered node, at the address
// Target gives. It answers 503 with no node, 502 when the node refuses or
// breaks the connection or has no address, 504 when it does not answer
// within the upstream timeout. It returns once the nodes listed at start
// are registered, and stops when ctx ends.
func StartNodeBalancer(ctx context.Context, client kubernetes.Interface, cfg NodeBalancerConfig) (*NodeBalancer, error) {
	if cfg.Target == nil {
		return nil, errors.New("a node balancer needs a target")
	}
	b := &NodeBalancer{
		balancer: newBalancer(cfg.Proxy, cfg.Target, "source", "node-balancer"),
		cfg:      cfg,
		nodes:    map[string]*nodeState{},
	}
	nodes := func(f informers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Core().V1().Nodes().Informer()
	}
	if err := b.start(ctx, client, "", cfg.Selector, nodes, b.observe); err != nil {
		return nil, err
	}
	return b, nil
}

// Nodes lists the nodes registered, sorted.
func (b *NodeBalancer) Nodes() []string { return b.fwd.list() }

// observe takes a node as the informer saw it (nil if deleted or no longer
// selected) and registers it at once or deregisters it after the delay.
func (b *NodeBalancer) observe(name string, obj any, _ bool) {
	node, _ := obj.(*corev1.Node)
	eligible := node != nil && nodeReady(node) && !excluded(node)

	b.mu.Lock()
	st := b.nodes[name]
	if st == nil {
		st = &nodeState{}
		b.nodes[name] = st
	} else if st.eligible == eligible {
		b.mu.Unlock()
		return
	}
	st.eligible = eligible
	st.gen++
	gen, leave := st.gen, st.registered && !eligible
	switch {
	case eligible:
		st.registered = true
		b.publishLocked()
	case !st.registered:
		delete(b.nodes, name)
	}
	b.mu.Unlock()

	if leave {
		b.queue.after(b.cfg.DeregistrationDelay, func() { b.deregister(name, gen) })
	}
}

// deregister takes a node out, unless its eligibility changed since the
// deregistration was scheduled.
func (b *NodeBalancer) deregister(name string, gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.nodes[name]; st != nil && st.gen == gen {
		delete(b.nodes, name)
		b.publishLocked()
	}
}

// publishLocked hands the registered nodes to the forwarder.
func (b *NodeBalancer) publishLocked() {
	var names []string
	for name, st := range b.nodes {
		if st.registered {
			names = append(names, name)
		}
	}
	b.fwd.set(names)
}

// nodeReady reports whether the node's Ready condition is True.
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// excluded reports whether the node bears the label that takes it out of
// external load balancers.
func excluded(n *corev1.Node) bool {
	_, ok := n.Labels[corev1.LabelNodeExcludeBalancers]
	return ok
}
