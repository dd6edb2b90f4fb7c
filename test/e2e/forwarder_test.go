package e2e

import (
	"io"
	"net"
	"sync"
	"testing"
)

// forwarder forwards TCP connections to a target, and breaks them as
// networks and servers do:
//   - stall: every connection open now stops passing bytes, both ways,
//     without closing: half-open, as after a NAT forgot it or a peer
//     vanished. Connections opened later pass.
//   - sever: every connection, open or opened later, passes nothing more
//     and is never closed, as for a process whose network to the target is
//     gone.
//   - down: every connection is closed and new ones are closed at once, as
//     while the target is stopped; up: connections pass again.
type forwarder struct {
	addr string
	ln   net.Listener

	mu    sync.Mutex
	state linkState
	links []*link
	wg    sync.WaitGroup
}

type linkState int

const (
	passing linkState = iota
	severed
	down
)

// link is one forwarded connection: the accepted side, and the target's
// side once dialled.
type link struct {
	in, out net.Conn
	stalled bool
}

// forward listens on ip (a free port) and forwards each connection to
// target (host:port), until the test ends.
func forward(t *testing.T, ip, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: ln.Addr().String(), ln: ln}
	t.Cleanup(f.close)
	f.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			f.accept(in, target)
		}
	})
	return f
}

func (f *forwarder) accept(in net.Conn, target string) {
	f.mu.Lock()
	state := f.state
	f.mu.Unlock()
	switch state {
	case down:
		in.Close()
		return
	case severed:
		l := &link{in: in, stalled: true}
		f.track(l)
		f.wg.Go(func() { _, _ = io.Copy(io.Discard, in) })
		return
	}
	out, err := net.Dial("tcp", target)
	if err != nil {
		in.Close()
		return
	}
	l := &link{in: in, out: out}
	f.track(l)
	f.wg.Go(func() { f.pipe(l, out, in) })
	f.wg.Go(func() { f.pipe(l, in, out) })
}

func (f *forwarder) track(l *link) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links = append(f.links, l)
}

func (f *forwarder) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		stalled := l.stalled
		f.mu.Unlock()
		if err != nil {
			if !stalled {
				dst.Close()
			}
			return // a stalled peer hears nothing, not even the close
		}
		if stalled {
			continue // swallowed: the peer hears nothing, ever
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// stall makes every connection open now half-open.
func (f *forwarder) stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		l.stalled = true
	}
}

// sever makes every connection, open or opened later, half-open.
func (f *forwarder) sever() {
	f.mu.Lock()
	f.state = severed
	f.mu.Unlock()
	f.stall()
}

// down closes every connection, and every connection opened until up.
func (f *forwarder) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = down
	for _, l := range f.links {
		l.close()
	}
	f.links = nil
}

// up makes new connections pass again.
func (f *forwarder) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = passing
}

func (l *link) close() {
	l.in.Close()
	if l.out != nil {
		l.out.Close()
	}
}

// close ends every connection, so nothing waits on the forwarder any more.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, l := range f.links {
		l.close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
