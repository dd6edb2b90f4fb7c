package traffic

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	testingclock "k8s.io/utils/clock/testing"
)

// waitTimeout bounds every wait of the tests.
const waitTimeout = 30 * time.Second

// eventually polls cond until it holds, failing the test after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, waitTimeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// testContext ends with the test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// upstream is a server on 127.0.0.1 that answers its name. A request to
// /slow waits until release is called.
type upstream struct {
	name     string
	addr     string
	hits     atomic.Int64
	inFlight atomic.Int64
	release  func()
}

func newUpstream(t *testing.T, name string) *upstream {
	u := &upstream{name: name}
	gate := make(chan struct{})
	var once sync.Once
	u.release = func() { once.Do(func() { close(gate) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.URL.Path == "/slow" {
			u.inFlight.Add(1)
			defer u.inFlight.Add(-1)
			<-gate
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(u.release) // before srv.Close, which waits for requests
	u.addr = srv.Listener.Addr().String()
	return u
}

// get sends a GET and returns the status code and the body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// answers sends n GETs one after the other and counts the bodies of the
// 200 answers, and the status code of any other under "HTTP <code>".
func answers(t *testing.T, url string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		code, body := get(t, url)
		if code != http.StatusOK {
			body = http.StatusText(code)
		}
		got[body]++
	}
	return got
}

// refusingAddr returns a host:port of 127.0.0.1 that refuses connections:
// a socket bound to it, so no one else takes the port, that never listens.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
}

// rawServer serves each connection on 127.0.0.1 with handle, given the
// connection and a reader of it, and counts the connections.
type rawServer struct {
	addr  string
	conns atomic.Int64
}

func newRawServer(t *testing.T, handle func(c net.Conn, r *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() { handle(c, bufio.NewReader(c)) })
		}
	})
	return s
}

// readRequest reads one request from r and reports whether there was one.
func readRequest(r *bufio.Reader) bool {
	req, err := http.ReadRequest(r)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, req.Body)
	return true
}

// stepWhileWaiting steps fc by step each time something waits on it, after
// calling before(i) for the i-th step, until done is closed.
func stepWhileWaiting(t *testing.T, fc *testingclock.FakeClock, step time.Duration, done <-chan struct{}, before func(i int)) int {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for i := 0; ; {
		select {
		case <-done:
			return i
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %d steps", i)
		}
		if !fc.HasWaiters() {
			time.Sleep(time.Millisecond)
			continue
		}
		before(i)
		fc.Step(step)
		i++
	}
}
