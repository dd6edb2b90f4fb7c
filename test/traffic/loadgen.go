package traffic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// Defaults of the load generator's options.
const (
	defaultRequestTimeout = 2 * time.Second
	// idleConnsPerHost is how many kept-alive connections the load
	// generator keeps: as many as a busy client would, not Go's default 2.
	idleConnsPerHost = 64
)

// LoadGen sends GET requests to one URL at a fixed rate. Make it with
// NewLoadGen; Run may be called more than once, not concurrently.
type LoadGen struct {
	url     string
	rate    float64
	opts    loadOptions
	client  *http.Client
	spacing time.Duration
}

// LoadOption changes a load generator.
type LoadOption func(*loadOptions)

type loadOptions struct {
	count    int
	duration time.Duration
	timeout  time.Duration
	clock    clock.Clock
	observe  func(Result)
}

// WithCount stops the run after n requests (default, or n <= 0: no bound
// by count).
func WithCount(n int) LoadOption {
	return func(o *loadOptions) { o.count = n }
}

// WithDuration stops sending once d has passed since the first request
// (default, or d <= 0: no bound by time). A request due at d or later is
// not sent.
func WithDuration(d time.Duration) LoadOption {
	return func(o *loadOptions) { o.duration = d }
}

// WithRequestTimeout bounds each request, from dialling to the end of the
// answer's body (default 2 s). It is measured in real time, whatever the
// clock.
func WithRequestTimeout(d time.Duration) LoadOption {
	return func(o *loadOptions) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithClock sets the clock that schedules the requests and measures their
// latency (default the real clock).
func WithClock(c clock.Clock) LoadOption {
	return func(o *loadOptions) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithObserver calls observe with each request's result as it completes,
// from the request's own goroutine: observe must be safe for concurrent
// use, and quick, since Run waits for it.
func WithObserver(observe func(Result)) LoadOption {
	return func(o *loadOptions) { o.observe = observe }
}

// NewLoadGen makes a load generator sending rate requests a second to
// target, an http URL whose host is an IP of 127.0.0.0/8 (anything else is
// refused with a *LoopbackError).
//
// The load generator keeps connections alive, as a real client does, but
// never lets Go's transport retry a request: a request that fails on a
// kept-alive connection (closed or reset by the server before any answer)
// counts as Reset, and Summary.ResetReused counts those apart. A real
// client may retry such a GET (RFC 9112, section 9.3.1), so the Reset count
// is an upper bound on what its user would see.
func NewLoadGen(target string, rate float64, opts ...LoadOption) (*LoadGen, error) {
	if _, err := checkLoopbackURL(target); err != nil {
		return nil, err
	}
	if !(rate > 0) || rate > float64(time.Second) {
		return nil, fmt.Errorf("rate %v requests/s: not in (0, 1e9]", rate)
	}
	o := loadOptions{timeout: defaultRequestTimeout, clock: clock.RealClock{}}
	for _, opt := range opts {
		opt(&o)
	}
	transport := &http.Transport{
		Proxy:               nil, // never the environment's proxy
		DialContext:         dialLoopback(defaultDialer()),
		MaxIdleConnsPerHost: idleConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &LoadGen{
		url:  target,
		rate: rate,
		opts: o,
		client: &http.Client{
			Transport: transport,
			// An answer is an answer: a redirect is not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		spacing: time.Duration(float64(time.Second) / rate),
	}, nil
}

// Run sends requests until the count or the duration is reached, or ctx
// ends, then waits for those sent to complete (each is bounded by the
// request timeout, not by ctx, so that every request sent has a real
// outcome) and sums them up.
//
// Request i is due at i/rate after the first, whatever became of the
// others: each runs in its own goroutine, so a slow answer does not delay
// the schedule. A request due while the scheduler was held up (by the
// machine) is sent at once.
func (g *LoadGen) Run(ctx context.Context) Summary {
	var (
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
	)
	clk := g.opts.clock
	start := clk.Now()
	reqCtx := context.WithoutCancel(ctx)
	for i := 0; g.opts.count <= 0 || i < g.opts.count; i++ {
		offset := time.Duration(i) * g.spacing
		if g.opts.duration > 0 && offset >= g.opts.duration {
			break
		}
		if !g.waitUntil(ctx, start.Add(offset)) {
			break
		}
		wg.Go(func() {
			r := g.send(reqCtx, i)
			if g.opts.observe != nil {
				g.opts.observe(r)
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	return summarize(results, clk.Since(start))
}

// waitUntil waits for the clock to reach due, and reports false if ctx
// ended first.
func (g *LoadGen) waitUntil(ctx context.Context, due time.Time) bool {
	if ctx.Err() != nil {
		return false
	}
	wait := due.Sub(g.opts.clock.Now())
	if wait <= 0 {
		return true
	}
	t := g.opts.clock.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// send makes request seq and reads its answer to the end.
func (g *LoadGen) send(ctx context.Context, seq int) Result {
	r := Result{Seq: seq, Start: g.opts.clock.Now()}
	ctx, cancel := context.WithTimeout(ctx, g.opts.timeout)
	defer cancel()
	var reused atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		r.Err = err
	} else {
		r.Code, r.Err = g.do(req)
	}
	r.Latency = g.opts.clock.Since(r.Start)
	r.Reused = reused.Load()
	r.Outcome = classify(r.Code, r.Err)
	return r
}

// do sends req with retries disabled and reads the body to its end. It
// returns the status code, if an answer came, and the error, if any.
func (g *LoadGen) do(req *http.Request) (int, error) {
	// Go's transport retries a GET on a kept-alive connection that broke
	// before any answer, unless the request has a body it cannot rewind
	// (net/http.Transport's documentation). An empty such body is sent as
	// no body at all.
	req.Body, req.GetBody, req.ContentLength = emptyBody{}, nil, 0
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp.StatusCode, fmt.Errorf("reading the body of an HTTP %d answer: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

// emptyBody is a request body with nothing in it that the transport cannot
// rewind.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

// classify names the outcome of a request: by its error if it had one,
// else by its status code.
func classify(code int, err error) Outcome {
	if err != nil {
		return classifyError(err)
	}
	switch {
	case code >= 200 && code < 300:
		return OK
	case code == http.StatusBadGateway:
		return Status502
	case code == http.StatusServiceUnavailable:
		return Status503
	case code == http.StatusGatewayTimeout:
		return Status504
	case code >= 500 && code < 600:
		return Status5xx
	}
	return Other
}

// classifyError names the outcome of a request that failed.
func classifyError(err error) Outcome {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		return Timeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's errServerClosedIdle, unexported.
		strings.Contains(err.Error(), "server closed idle connection"):
		return Reset
	}
	return Other
}
