package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// pollInterval is the Poller interval of the integration tests.
const pollInterval = 50 * time.Millisecond

// waitTimeout bounds every wait for an event or a health report.
const waitTimeout = 10 * time.Second

// The recorder and waits shared by the sources' tests.
type recordingHealth = interruptiontest.Health

var (
	newRecordingHealth = interruptiontest.NewHealth
	failure            = interruptiontest.Failure
	success            = interruptiontest.Success
	next               = interruptiontest.Next
	quiet              = interruptiontest.Quiet
)

// testLogger writes the sources' logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// run starts the sources until the test ends, and returns their output.
// At cleanup it checks that each Run returned ctx's error.
func run(t *testing.T, sources []interruption.Source) <-chan interruption.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan interruption.Event, 16)
	var wg sync.WaitGroup
	errs := make(chan error, len(sources))
	for _, s := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Run(ctx, out)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		}
	})
	return out
}

// sourcesFor builds the sources of o against endpoint, with a fresh client.
func sourcesFor(t *testing.T, endpoint string, o Options, health interruption.HealthReporter) []interruption.Source {
	t.Helper()
	o.Endpoint = endpoint
	if o.Interval == 0 {
		o.Interval = pollInterval
	}
	sources, err := Sources(NewClient(o, nil), o, health, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return sources
}

// startAEMM runs amazon-ec2-metadata-mock for the test.
func startAEMM(t *testing.T, cfg aemm.Config) *aemm.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a cold build
	defer cancel()
	s, err := aemm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// faultProxy forwards to a backend and lets a test replace the answer for
// one metadata path, or make the whole endpoint go away.
type faultProxy struct {
	backend *url.URL
	proxy   *httputil.ReverseProxy
	// fault, when set, answers requests for its path instead of the backend.
	fault atomic.Pointer[fault]
}

type fault struct {
	path    string // the full URL path, e.g. /latest/meta-data/spot/instance-action
	handler http.HandlerFunc
}

func newFaultProxy(t *testing.T, backend string) *faultProxy {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	return &faultProxy{backend: u, proxy: httputil.NewSingleHostReverseProxy(u)}
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f := p.fault.Load(); f != nil && r.URL.Path == f.path {
		f.handler(w, r)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// inject makes path answer with handler; nil restores the backend.
func (p *faultProxy) inject(path string, handler http.HandlerFunc) {
	if handler == nil {
		p.fault.Store(nil)
		return
	}
	p.fault.Store(&fault{path: path, handler: handler})
}

// serve serves the proxy on addr until the test ends or the returned stop
// is called.
func (p *faultProxy) serve(t *testing.T, addr string) (stop func()) {
	t.Helper()
	var l net.Listener
	var err error
	for range 50 { // the port may be briefly in TIME_WAIT or taken
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l) //nolint:errcheck // ends with ErrServerClosed
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// closedAddr returns an address on 127.0.0.1 where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// answer returns a handler that always answers status and body.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}
