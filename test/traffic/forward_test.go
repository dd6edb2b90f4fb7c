package traffic

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// serveForwarder serves a forwarder sending to the given backends, each
// name mapped to its address (a name without one has no address).
func serveForwarder(t *testing.T, addrs map[string]string, backends ...string) string {
	t.Helper()
	cfg := ProxyConfig{UpstreamTimeout: 300 * time.Millisecond, Logger: testLogger(t)}.withDefaults()
	f := newForwarder(cfg, func(name string) (string, bool) {
		addr, ok := addrs[name]
		return addr, ok
	})
	f.set(backends)
	srv, err := serve(testContext(t), f, time.Second, cfg.Logger, func() {})
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + srv.addr
}

func TestForwarderMapsUpstreamFailuresToStatusCodes(t *testing.T) {
	hang := newRawServer(t, func(c net.Conn, r *bufio.Reader) {
		readRequest(r)
		r.ReadByte() // until the proxy gives up
	})
	reset := newRawServer(t, func(c net.Conn, r *bufio.Reader) {
		readRequest(r)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	up := newUpstream(t, "up")
	for _, tc := range []struct {
		name     string
		backends []string
		want     int
	}{
		{name: "no backend", want: http.StatusServiceUnavailable},
		{name: "an answer", backends: []string{"up"}, want: http.StatusOK},
		{name: "refused", backends: []string{"refused"}, want: http.StatusBadGateway},
		{name: "reset", backends: []string{"reset"}, want: http.StatusBadGateway},
		{name: "no answer in time", backends: []string{"hang"}, want: http.StatusGatewayTimeout},
		{name: "no address", backends: []string{"unknown"}, want: http.StatusBadGateway},
		{name: "address outside loopback, not dialled", backends: []string{"pod-ip"}, want: http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := serveForwarder(t, map[string]string{
				"up":      up.addr,
				"refused": refusingAddr(t),
				"reset":   reset.addr,
				"hang":    hang.addr,
				"pod-ip":  "192.0.2.1:80", // TEST-NET-1: never reachable
			}, tc.backends...)
			if code, body := get(t, url); code != tc.want {
				t.Errorf("got %d %q, want %d", code, body, tc.want)
			}
		})
	}
}

func TestForwarderGoesRoundRobin(t *testing.T) {
	a, b, c := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "c")
	url := serveForwarder(t, map[string]string{"a": a.addr, "b": b.addr, "c": c.addr}, "c", "a", "b", "a")
	var order []string
	for range 6 {
		_, body := get(t, url)
		order = append(order, body)
	}
	if got, want := order, []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("answered by %v, want %v", got, want)
	}
}

func TestDelayQueueRunsInOrderWhenDue(t *testing.T) {
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	q := newDelayQueue(fc)
	go q.run(testContext(t))
	ran := make(chan string, 3)
	q.after(0, func() { ran <- "now" })
	if got := <-ran; got != "now" {
		t.Fatalf("ran %q first", got)
	}
	q.after(time.Second, func() { ran <- "first" })
	fc.Step(500 * time.Millisecond)
	q.after(time.Second, func() { ran <- "second" })
	eventually(t, "a timer", fc.HasWaiters)
	fc.Step(499 * time.Millisecond)
	select {
	case got := <-ran:
		t.Fatalf("%q ran before it was due", got)
	default:
	}
	if q.len() != 2 {
		t.Fatalf("%d waiting, want 2", q.len())
	}
	fc.Step(time.Millisecond)
	if got := <-ran; got != "first" {
		t.Fatalf("ran %q, want first", got)
	}
	eventually(t, "a timer for the second", func() bool { return fc.HasWaiters() && q.len() == 1 })
	fc.Step(499 * time.Millisecond)
	if q.len() != 1 {
		t.Fatal("the second ran before it was due")
	}
	fc.Step(time.Millisecond)
	if got := <-ran; got != "second" {
		t.Fatalf("ran %q, want second", got)
	}
}
