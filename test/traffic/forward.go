package traffic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// Defaults of ProxyConfig.
const (
	defaultUpstreamTimeout = 5 * time.Second
	// readHeaderTimeout bounds reading a request's headers from a client.
	readHeaderTimeout = 10 * time.Second
)

// ProxyConfig is what the balancers have in common. Its zero value is
// ready to use.
type ProxyConfig struct {
	// UpstreamTimeout bounds the wait for an upstream's answer headers,
	// beyond which the balancer answers 504; and, when the balancer stops,
	// how long requests in flight may go on (default 5 s).
	UpstreamTimeout time.Duration
	// Clock times the balancer's delays (default the real clock).
	Clock clock.Clock
	// Logger receives the balancer's logs (default slog.Default()).
	Logger *slog.Logger
}

// withDefaults fills in the defaults.
func (c ProxyConfig) withDefaults() ProxyConfig {
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = defaultUpstreamTimeout
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// backendKey is the context key of the backend a request goes to.
type backendKey struct{}

// forwarder sends each request to the next of its backends, round-robin,
// through a reverse proxy. It answers 503 when it has no backend, 502 when
// the backend cannot be dialled or breaks the connection, 504 when it does
// not answer in time.
type forwarder struct {
	backends atomic.Pointer[[]string] // sorted names
	next     atomic.Uint64
	// target is the host:port of a backend's name, looked up per request.
	target func(name string) (string, bool)
	proxy  *httputil.ReverseProxy
	log    *slog.Logger
}

func newForwarder(cfg ProxyConfig, target func(string) (string, bool)) *forwarder {
	f := &forwarder{target: target, log: cfg.Logger}
	f.backends.Store(&[]string{})
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialLoopback(defaultDialer()),
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		MaxIdleConnsPerHost:   idleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(backendKey{}).(string)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:    transport,
		ErrorHandler: f.fail,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return f
}

// set replaces the backends.
func (f *forwarder) set(names []string) {
	names = slices.Sorted(slices.Values(names))
	names = slices.Compact(names)
	if !slices.Equal(names, *f.backends.Load()) {
		f.log.Info("backends changed", "backends", names)
	}
	f.backends.Store(&names)
}

// list returns the backends, sorted.
func (f *forwarder) list() []string {
	return slices.Clone(*f.backends.Load())
}

// ServeHTTP forwards r to the next backend.
func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	backends := *f.backends.Load()
	if len(backends) == 0 {
		http.Error(w, "no backend", http.StatusServiceUnavailable)
		return
	}
	name := backends[(f.next.Add(1)-1)%uint64(len(backends))]
	addr, ok := f.target(name)
	if !ok {
		f.log.Info("backend has no address", "backend", name)
		http.Error(w, "backend has no address", http.StatusBadGateway)
		return
	}
	ctx := context.WithValue(r.Context(), backendKey{}, addr)
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// fail answers a request the upstream did not: 504 if it timed out, 502
// for anything else (refused, reset, closed, an address not dialled).
func (f *forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	if classifyError(err) == Timeout && !errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	if r.Context().Err() == nil { // else the client has gone
		f.log.Info("upstream failed", "upstream", r.Context().Value(backendKey{}), "code", code, "err", err)
	}
	http.Error(w, http.StatusText(code), code)
}

// server serves a handler on 127.0.0.1 until ctx ends.
type server struct {
	addr string
	done chan struct{}
}

// serve listens on a free port of 127.0.0.1 and serves h until ctx ends,
// then lets requests in flight finish for up to grace, and runs stop.
func serve(ctx context.Context, h http.Handler, grace time.Duration, log *slog.Logger, stop func()) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s := &server{addr: ln.Addr().String(), done: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving stopped", "err", err)
		}
	}()
	go func() {
		defer close(s.done)
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			srv.Close()
		}
		<-served
		stop()
	}()
	return s, nil
}

// delayQueue runs functions after a delay, in the order they were given
// (the delay of one queue does not change, so neither does the order of
// their due times).
type delayQueue struct {
	clock clock.Clock
	mu    sync.Mutex
	items []delayed
	wake  chan struct{}
}

type delayed struct {
	due time.Time
	fn  func()
}

func newDelayQueue(c clock.Clock) *delayQueue {
	return &delayQueue{clock: c, wake: make(chan struct{}, 1)}
}

// after runs fn once d has passed on the queue's clock: at once, in the
// caller's goroutine, if d <= 0, else in the goroutine of run.
func (q *delayQueue) after(d time.Duration, fn func()) {
	if d <= 0 {
		fn()
		return
	}
	q.mu.Lock()
	q.items = append(q.items, delayed{due: q.clock.Now().Add(d), fn: fn})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// len is how many functions are waiting.
func (q *delayQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// run runs the functions as they fall due, until ctx ends. It keeps one
// timer for the first function while that one is waiting.
func (q *delayQueue) run(ctx context.Context) {
	var (
		timer    clock.Timer
		timerDue time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		q.mu.Lock()
		if len(q.items) > 0 && !q.clock.Now().Before(q.items[0].due) {
			fn := q.items[0].fn
			q.items = q.items[1:]
			q.mu.Unlock()
			fn()
			continue
		}
		var fired <-chan time.Time
		if len(q.items) > 0 {
			if due := q.items[0].due; timer == nil || !due.Equal(timerDue) {
				if timer != nil {
					timer.Stop()
				}
				timer, timerDue = q.clock.NewTimer(due.Sub(q.clock.Now())), due
			}
			fired = timer.C()
		}
		q.mu.Unlock()
		select {
		case <-fired:
			timer = nil
		case <-q.wake:
		case <-ctx.Done():
			return
		}
	}
}

// balancer is what both balancers are made of: a forwarder served on
// 127.0.0.1, fed by an informer through a delay queue.
type balancer struct {
	proxy ProxyConfig
	fwd   *forwarder
	srv   *server
	queue *delayQueue
}

// newBalancer makes a balancer sending to target, logging with logAttrs.
func newBalancer(cfg ProxyConfig, target func(string) (string, bool), logAttrs ...any) balancer {
	cfg = cfg.withDefaults()
	cfg.Logger = cfg.Logger.With(logAttrs...)
	return balancer{proxy: cfg, fwd: newForwarder(cfg, target), queue: newDelayQueue(cfg.Clock)}
}

// URL is the balancer's base URL, http://127.0.0.1:port.
func (b *balancer) URL() string { return "http://" + b.srv.addr }

// Done is closed once the balancer has stopped.
func (b *balancer) Done() <-chan struct{} { return b.srv.done }

// start has observe called for each object of the informer that inform
// picks from a factory of the namespace ns ("": all) and label selector
// (nil when it is deleted or stops matching; initial for those listed at
// start), serves the forwarder, and runs the informer and the delay queue
// until ctx ends. It returns once the objects listed at start are observed.
func (b *balancer) start(ctx context.Context, client kubernetes.Interface, ns, selector string,
	inform func(informers.SharedInformerFactory) cache.SharedIndexInformer, observe func(key string, obj any, initial bool),
) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	informer := inform(factory)
	deleted := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			observe(tomb.Key, nil, false)
		} else if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			observe(key, nil, false)
		}
	}
	changed := func(obj any, initial bool) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			observe(key, obj, initial)
		}
	}
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj, false) },
		DeleteFunc: deleted,
	})
	if err != nil {
		return fmt.Errorf("adding the informer's handler: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	srv, err := serve(ctx, b.fwd, b.proxy.UpstreamTimeout, b.proxy.Logger, factory.Shutdown)
	if err != nil {
		cancel()
		return err
	}
	b.srv = srv
	go b.queue.run(ctx)
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		cancel()
		<-srv.done
		return fmt.Errorf("listing: %w", context.Cause(ctx))
	}
	// The balancer runs until the parent ends; cancel is for failing.
	context.AfterFunc(ctx, cancel)
	return nil
}
