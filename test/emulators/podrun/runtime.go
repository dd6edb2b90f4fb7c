package podrun

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// StartupAnnotation, a Go duration, is how long a pod's application takes
// to start: its server listens, and the pod can be Ready, only that long
// after the pod is bound to its node.
const StartupAnnotation = "lastcall.test/startup"

// SignalAnnotation chooses what a pod's server does on "SIGTERM": Graceful
// (the default, and what an unknown value means), Abrupt or Ignore.
const SignalAnnotation = "lastcall.test/on-sigterm"

// The values of SignalAnnotation.
const (
	// Graceful stops accepting connections, finishes the requests in
	// flight, then exits (http.Server.Shutdown).
	Graceful = "graceful"
	// Abrupt closes the listener and every connection at once and exits.
	Abrupt = "abrupt"
	// Ignore keeps serving until killed at the end of the grace period.
	Ignore = "ignore"
)

// Option changes a Runtime.
type Option func(*Runtime)

// WithClock sets the clock that times preStop hooks and grace periods
// (default: the real one).
func WithClock(c clock.WithTicker) Option { return func(r *Runtime) { r.clock = c } }

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(r *Runtime) { r.log = l } }

// Runtime runs the pods matching its selector. It stops, killing every
// server it runs, when the context given to Start ends.
type Runtime struct {
	client kubernetes.Interface
	clock  clock.WithTicker
	log    *slog.Logger

	wg sync.WaitGroup

	mu      sync.Mutex
	stopped bool
	pods    map[types.UID]*mailbox // pods seen and not yet deleted
	addrs   map[types.UID]string   // every address ever given, by pod UID
	running map[types.UID]*running // servers not yet exited
	dead    map[string]bool        // nodes killed
}

// running is a server and the node it runs on.
type running struct {
	node string
	srv  *server
}

// Start starts a runtime for the pods matching selector (a label selector,
// such as cluster.ServedLabel) and returns once it has listed them. It runs
// until ctx ends; Wait waits for it to finish.
func Start(ctx context.Context, client kubernetes.Interface, selector string, opts ...Option) (*Runtime, error) {
	if _, err := labels.Parse(selector); err != nil {
		return nil, fmt.Errorf("podrun: label selector %q: %w", selector, err)
	}
	r := &Runtime{
		client:  client,
		clock:   clock.RealClock{},
		log:     slog.Default(),
		pods:    map[types.UID]*mailbox{},
		addrs:   map[types.UID]string{},
		running: map[types.UID]*running{},
		dead:    map[string]bool{},
	}
	for _, opt := range opts {
		opt(r)
	}
	r.log = r.log.With("component", "podrun")
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.update(ctx, obj) },
		UpdateFunc: func(_, obj any) { r.update(ctx, obj) },
		DeleteFunc: r.deleted,
	}); err != nil {
		return nil, fmt.Errorf("podrun: watching pods: %w", err)
	}
	factory.Start(ctx.Done())
	r.wg.Go(func() {
		<-ctx.Done()
		factory.Shutdown()
		r.stop()
	})
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("podrun: listing pods %q: %w", selector, context.Cause(ctx))
	}
	return r, nil
}

// Wait returns once the runtime has stopped: its context ended, every
// server was killed and every goroutine ended.
func (r *Runtime) Wait() { r.wg.Wait() }

// Addr returns the address (host:port) of the server of the pod with this
// UID. It stays known after the pod is gone, and is never given to another
// pod, so a client still using it finds nobody there.
func (r *Runtime) Addr(uid types.UID) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.addrs[uid]
	return a, ok
}

// AddrOf is Addr for an EndpointSlice endpoint's targetRef.
func (r *Runtime) AddrOf(ref *corev1.ObjectReference) (string, bool) {
	if ref == nil || ref.Kind != "Pod" {
		return "", false
	}
	return r.Addr(ref.UID)
}

// KillNode is the cloud taking the node's instance: every server of a pod
// on it stops at once, its connections reset, and no pod ever runs on it
// again. The pod objects are left as they are.
func (r *Runtime) KillNode(name string) {
	r.mu.Lock()
	r.dead[name] = true
	var victims []*server
	for _, run := range r.running {
		if run.node == name {
			victims = append(victims, run.srv)
		}
	}
	r.mu.Unlock()
	r.log.Info("node killed", "node", name, "servers", len(victims))
	for _, s := range victims {
		s.kill(exitSIGKILL, true)
	}
}

// update hands the pod's latest version to its worker, starting one for a
// pod not seen before.
func (r *Runtime) update(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	mb, ok := r.pods[pod.UID]
	if !ok {
		mb = newMailbox()
		r.pods[pod.UID] = mb
		r.wg.Go(func() { r.runPod(ctx, mb) })
	}
	mb.put(pod)
}

// deleted tells the pod's worker that the pod object is gone.
func (r *Runtime) deleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if mb, ok := r.pods[pod.UID]; ok {
		mb.close()
		delete(r.pods, pod.UID)
	}
}

// stop kills every server; the workers then end.
func (r *Runtime) stop() {
	r.mu.Lock()
	r.stopped = true
	var all []*server
	for _, run := range r.running {
		all = append(all, run.srv)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.kill(exitSIGKILL, false)
	}
}

// startServer starts the pod's server unless its node is dead, and records
// its address. It returns nil, nil on a dead node.
func (r *Runtime) startServer(ctx context.Context, pod *corev1.Pod, log *slog.Logger) (*server, netip.Addr, error) {
	loopback, podIP, err := addresses.next()
	if err != nil {
		return nil, netip.Addr{}, err
	}
	srv, err := startServer(ctx, loopback.String(), pod.Name, log)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("listening on %s: %w", loopback, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead[pod.Spec.NodeName] || r.stopped {
		srv.kill(exitSIGKILL, true)
		return nil, netip.Addr{}, nil
	}
	r.addrs[pod.UID] = srv.addr
	r.running[pod.UID] = &running{node: pod.Spec.NodeName, srv: srv}
	return srv, podIP, nil
}

// forget drops a server that has exited.
func (r *Runtime) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, uid)
}

// nodeDead reports whether KillNode was called for the node.
func (r *Runtime) nodeDead(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead[name]
}

// mailbox holds the latest version of one pod for its worker.
type mailbox struct {
	mu   sync.Mutex
	pod  *corev1.Pod
	gone bool
	wake chan struct{} // a token when something changed
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (m *mailbox) put(pod *corev1.Pod) {
	m.mu.Lock()
	m.pod = pod
	m.mu.Unlock()
	m.notify()
}

// close says the pod object is gone.
func (m *mailbox) close() {
	m.mu.Lock()
	m.gone = true
	m.mu.Unlock()
	m.notify()
}

func (m *mailbox) notify() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// latest returns the latest version and whether the object is gone.
func (m *mailbox) latest() (*corev1.Pod, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pod, m.gone
}
