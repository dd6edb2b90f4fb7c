package podrun

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Exit codes of the container, as a kubelet reports them.
const (
	exitGraceful = 0   // exited by itself after SIGTERM
	exitSIGTERM  = 143 // died of SIGTERM
	exitSIGKILL  = 137 // killed at the end of the grace period
)

// readHeaderTimeout bounds how long a client may take to send a request's
// headers. Bodies have no limit: a request is held open by its body.
const readHeaderTimeout = 10 * time.Second

// server is the "process" of a served pod: an HTTP server on its own
// loopback address.
type server struct {
	addr string
	srv  *http.Server
	ln   *listener
	log  *slog.Logger

	exitOnce sync.Once
	exitCode int
	reset    bool          // the node died: killed with connections reset
	exited   chan struct{} // closed once the server stopped for good
}

// startServer listens on ip (any port) and serves name there.
func startServer(ctx context.Context, ip, name string, log *slog.Logger) (*server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	s := &server{
		addr:   ln.Addr().String(),
		ln:     &listener{Listener: ln, conns: map[net.Conn]struct{}{}},
		log:    log,
		exited: make(chan struct{}),
	}
	s.srv = &http.Server{
		Handler:           answer(name),
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Warn("serving ended", "error", err)
		}
	}()
	return s, nil
}

// answer answers 200 with name. A request with a body gets its headers at
// once and name when the body ends.
func answer(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.ContentLength != 0 {
			rc := http.NewResponseController(w)
			if err := rc.EnableFullDuplex(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusOK)
			if err := rc.Flush(); err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, name)
	})
}

// exit records how the server ended, the first time only.
func (s *server) exit(code int, reset bool) {
	s.exitOnce.Do(func() {
		s.exitCode, s.reset = code, reset
		close(s.exited)
	})
}

// shutdown is a graceful exit: the listener closes at once (before shutdown
// returns), requests in flight finish, then the server exits with code 0,
// unless killed first (Shutdown returns once Close has closed every
// connection).
func (s *server) shutdown() {
	_ = s.ln.Close()
	go func() {
		if err := s.srv.Shutdown(context.Background()); err != nil {
			s.log.Debug("shutdown", "error", err)
		}
		s.exit(exitGraceful, false)
	}()
}

// kill closes the listener and every connection at once and exits with
// code; with reset, peers see their connections reset.
func (s *server) kill(code int, reset bool) {
	s.ln.kill(reset)
	_ = s.srv.Close()
	s.exit(code, reset)
}

// exitStatus returns the exit code and whether the node died, once exited
// is closed.
func (s *server) exitStatus() (code int, nodeDied bool) {
	<-s.exited
	return s.exitCode, s.reset
}

// listener tracks its connections so that they can all be closed, or
// reset, at once.
type listener struct {
	net.Listener

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	killed bool
	conns  map[net.Conn]struct{}
}

// Accept tracks the connection, or closes it if the listener was killed
// meanwhile.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return &conn{Conn: c, l: l}, nil
}

// Close closes the listening socket, once.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

// kill closes the listener and every connection; with reset, each is
// closed with SO_LINGER 0 so that the peer gets a RST.
func (l *listener) kill(reset bool) {
	_ = l.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	for c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
	clear(l.conns)
}

// conn is an accepted connection that leaves its listener's set when
// closed.
type conn struct {
	net.Conn
	l *listener
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
