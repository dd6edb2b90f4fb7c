package traffic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestNewLoadGenRefusesAddressesOutsideLoopback(t *testing.T) {
	for _, tc := range []struct {
		url     string
		rate    float64
		refused bool
	}{
		{url: "http://127.0.0.1:8080/", rate: 10},
		{url: "http://127.42.0.9:80/x", rate: 10},
		{url: "http://localhost:8080/", rate: 10, refused: true},
		{url: "http://10.0.0.1:80/", rate: 10, refused: true},
		{url: "http://[::1]:80/", rate: 10, refused: true},
		{url: "http://[::ffff:10.0.0.1]:80/", rate: 10, refused: true},
		{url: "https://127.0.0.1:443/", rate: 10, refused: true},
		{url: "http://127.0.0.1:80/", rate: 0, refused: true},
		{url: "http://127.0.0.1:80/", rate: -1, refused: true},
	} {
		_, err := NewLoadGen(tc.url, tc.rate)
		if (err != nil) != tc.refused {
			t.Errorf("NewLoadGen(%q, %v): error %v, want refused %t", tc.url, tc.rate, err, tc.refused)
		}
	}
	_, err := NewLoadGen("http://192.168.1.1/", 1)
	if le := (*LoopbackError)(nil); !errors.As(err, &le) || le.Address != "192.168.1.1" {
		t.Errorf("NewLoadGen(192.168.1.1): error %v, want a *LoopbackError", err)
	}
}

// runFake runs g on a fake clock, stepping it by the request spacing each
// time the load generator waits, after calling before(i) for the i-th
// step. It returns the summary and the number of steps.
func runFake(t *testing.T, g *LoadGen, fc *testingclock.FakeClock, before func(i int)) (Summary, int) {
	t.Helper()
	done := make(chan struct{})
	var s Summary
	go func() {
		defer close(done)
		s = g.Run(testContext(t))
	}()
	steps := stepWhileWaiting(t, fc, g.spacing, done, before)
	return s, steps
}

func TestLoadGenStopsAtTheCountOrTheDuration(t *testing.T) {
	for _, tc := range []struct {
		name          string
		count         int
		duration      time.Duration
		sent, steps   int
		wantElapsedMS int64
	}{
		// At 10 requests a second, request i is due at i*100ms.
		{name: "count first", count: 5, duration: time.Hour, sent: 5, steps: 4, wantElapsedMS: 400},
		{name: "duration first", count: 1000, duration: time.Second, sent: 10, steps: 9, wantElapsedMS: 900},
		{name: "duration not a multiple of the spacing", duration: 1050 * time.Millisecond, sent: 11, steps: 10, wantElapsedMS: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
			defer srv.Close()
			fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
			g, err := NewLoadGen(srv.URL, 10, WithCount(tc.count), WithDuration(tc.duration), WithClock(fc))
			if err != nil {
				t.Fatal(err)
			}
			s, steps := runFake(t, g, fc, func(int) {})
			if s.Sent != tc.sent || s.Counts[OK] != tc.sent || hits.Load() != int64(tc.sent) || s.Failed() != 0 {
				t.Errorf("sent %d (%s), the server saw %d; want %d ok", s.Sent, s, hits.Load(), tc.sent)
			}
			if steps != tc.steps || s.Elapsed.Milliseconds() != tc.wantElapsedMS {
				t.Errorf("took %d steps of 100ms and %s; want %d and %dms", steps, s.Elapsed, tc.steps, tc.wantElapsedMS)
			}
		})
	}
}

func TestLoadGenKeepsTheRateWhenRequestsHang(t *testing.T) {
	const n = 10
	var arrived, inFlight, maxInFlight atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		arrived.Add(1)
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); now > m && !maxInFlight.CompareAndSwap(m, now); m = maxInFlight.Load() {
		}
		<-release
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	go func() {
		// Release every request once all have arrived; the test fails on
		// its own if they do not.
		deadline := time.Now().Add(waitTimeout)
		for arrived.Load() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		close(release)
	}()
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	g, err := NewLoadGen(srv.URL, 10, WithCount(n), WithClock(fc), WithRequestTimeout(waitTimeout))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := runFake(t, g, fc, func(i int) {
		// Request i is at the server, and hangs there, before request
		// i+1 is due.
		eventually(t, fmt.Sprintf("request %d at the server", i), func() bool { return arrived.Load() == int64(i+1) })
	})
	if s.Sent != n || s.Counts[OK] != n {
		t.Errorf("got %s, want %d ok", s, n)
	}
	if maxInFlight.Load() != n {
		t.Errorf("at most %d requests were in flight at once, want all %d", maxInFlight.Load(), n)
	}
}

func TestLoadGenStopsWhenContextEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	g, err := NewLoadGen(srv.URL, 10, WithClock(fc)) // no bound but ctx
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Summary)
	go func() { done <- g.Run(ctx) }()
	for range 3 {
		eventually(t, "the load generator waiting", fc.HasWaiters)
		fc.Step(g.spacing)
	}
	eventually(t, "the load generator waiting", fc.HasWaiters)
	cancel()
	select {
	case s := <-done:
		if s.Sent != 4 || s.Counts[OK] != 4 {
			t.Errorf("got %s, want the 4 requests due before ctx ended, ok", s)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after ctx ended")
	}
}

// status answers with a status code.
func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func TestLoadGenCountsEachOutcome(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Outcome
		// url gives the URL to load.
		url func(t *testing.T) string
	}{
		{name: "200", want: OK, url: httpServer(status(http.StatusOK))},
		{name: "204", want: OK, url: httpServer(status(http.StatusNoContent))},
		{name: "502", want: Status502, url: httpServer(status(http.StatusBadGateway))},
		{name: "503", want: Status503, url: httpServer(status(http.StatusServiceUnavailable))},
		{name: "504", want: Status504, url: httpServer(status(http.StatusGatewayTimeout))},
		{name: "500", want: Status5xx, url: httpServer(status(http.StatusInternalServerError))},
		{name: "404", want: Other, url: httpServer(status(http.StatusNotFound))},
		{name: "refused", want: Refused, url: func(t *testing.T) string { return "http://" + refusingAddr(t) }},
		{name: "reset after the request", want: Reset, url: rawURL(func(c net.Conn, r *bufio.Reader) {
			readRequest(r)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		})},
		{name: "closed before any answer", want: Reset, url: rawURL(func(c net.Conn, r *bufio.Reader) {
			readRequest(r)
			c.Close()
		})},
		{name: "closed in the body", want: Reset, url: rawURL(func(c net.Conn, r *bufio.Reader) {
			readRequest(r)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
			c.Close()
		})},
		{name: "no answer", want: Timeout, url: rawURL(func(c net.Conn, r *bufio.Reader) {
			readRequest(r)
			io.Copy(io.Discard, r) // until the client gives up
		})},
		{name: "not HTTP", want: Other, url: rawURL(func(c net.Conn, r *bufio.Reader) {
			readRequest(r)
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n")
			c.Close()
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var results []Result
			var mu sync.Mutex
			g, err := NewLoadGen(tc.url(t), 1, WithCount(1), WithRequestTimeout(300*time.Millisecond),
				WithObserver(func(r Result) {
					mu.Lock()
					defer mu.Unlock()
					results = append(results, r)
				}))
			if err != nil {
				t.Fatal(err)
			}
			s := g.Run(testContext(t))
			if s.Sent != 1 || s.Counts[tc.want] != 1 {
				t.Fatalf("got %s (%v), want one %s", s, s.Examples, tc.want)
			}
			if wantFailed := tc.want != OK; (s.Failed() == 1) != wantFailed {
				t.Errorf("Failed() = %d for %s", s.Failed(), tc.want)
			}
			if len(results) != 1 || results[0].Outcome != tc.want {
				t.Errorf("the observer saw %+v, want one %s", results, tc.want)
			}
		})
	}
}

// httpServer returns the URL of a test server of h.
func httpServer(h http.Handler) func(t *testing.T) string {
	return func(t *testing.T) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
}

// rawURL returns the URL of a raw server of handle.
func rawURL(handle func(c net.Conn, r *bufio.Reader)) func(t *testing.T) string {
	return func(t *testing.T) string { return "http://" + newRawServer(t, handle).addr }
}

// A GET that breaks on a kept-alive connection before any answer is what
// Go's transport retries on a new connection: the load generator must
// count it, and the server must see no second connection.
func TestLoadGenCountsResetOnKeptAliveConnectionWithoutRetrying(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn, r *bufio.Reader) {
		if !readRequest(r) {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if readRequest(r) {
			c.Close()
		}
	})
	var completed atomic.Int64
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	g, err := NewLoadGen("http://"+srv.addr, 10, WithCount(2), WithClock(fc),
		WithObserver(func(Result) { completed.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := runFake(t, g, fc, func(i int) {
		// The first request is over, its connection idle, before the
		// second is sent.
		eventually(t, "the first request's result", func() bool { return completed.Load() == int64(i+1) })
	})
	if s.Sent != 2 || s.Counts[OK] != 1 || s.Counts[Reset] != 1 || s.ResetReused != 1 {
		t.Errorf("got %s, want 1 ok and 1 reset on a kept-alive connection", s)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("the server saw %d connections, want 1 (the request was retried)", n)
	}
}

func TestSummary(t *testing.T) {
	var results []Result
	for i := 1; i <= 100; i++ { // latencies 1ms..100ms
		r := Result{Seq: i - 1, Latency: time.Duration(i) * time.Millisecond, Outcome: OK, Code: 200}
		switch i {
		case 7:
			r.Outcome, r.Code = Status503, 503
		case 50, 60:
			r.Outcome, r.Err, r.Reused = Reset, errors.New("connection reset by peer"), i == 60
		}
		results = append(results, r)
	}
	s := summarize(results, 10*time.Second)
	if s.Sent != 100 || s.Failed() != 3 || s.Counts[OK] != 97 || s.Counts[Reset] != 2 || s.ResetReused != 1 {
		t.Errorf("counts: %s", s)
	}
	if s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("latencies p50 %s p99 %s max %s, want 50ms 99ms 100ms", s.P50, s.P99, s.Max)
	}
	if s.Examples[Status503] != "HTTP 503" || s.Examples[Reset] != "connection reset by peer" || s.Examples[OK] != "" {
		t.Errorf("examples: %q", s.Examples)
	}
	want := "sent=100 failed=3 ok=97 503=1 reset=2 (reset on kept-alive=1) p50=50ms p99=99ms max=100ms in 10s"
	if got := s.String(); got != want {
		t.Errorf("String() = %q\nwant        %q", got, want)
	}
	if got := summarize(nil, 0).String(); !strings.HasPrefix(got, "sent=0 failed=0 p50=0s") {
		t.Errorf("empty: %q", got)
	}
}
