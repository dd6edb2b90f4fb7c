// Package gcemeta is an in-process fake of the GCE metadata server, faithful
// to what cloud.google.com/go/compute/metadata relies on: the
// Metadata-Flavor header (403 without it), an ETag on every answer, 404 for
// unknown paths, and long polling with wait_for_change, last_etag and
// timeout_sec that really blocks until the value changes. Point the library
// at it with GCE_METADATA_HOST=Server.Host().
//
// There is no installable GCE metadata emulator, and a public one that
// answers wait_for_change at once makes metadata.Subscribe spin; this fake's
// tests drive it through the real library to prove it does not.
package gcemeta

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// prefix is where every metadata path is served.
	prefix = "/computeMetadata/v1/"
	// DefaultWaitTimeout is how long a wait_for_change request blocks when
	// it gives no timeout_sec.
	DefaultWaitTimeout = 60 * time.Second
	// flavorHeader and flavor are the header the server demands and echoes.
	flavorHeader = "Metadata-Flavor"
	flavor       = "Google"
)

// Default values every Server starts with.
const (
	DefaultInstanceName = "lastcall-test-vm"
	DefaultInstanceID   = "1234567890123456789"
	DefaultZone         = "projects/123/zones/us-central1-a"
	DefaultProjectID    = "lastcall-test"
)

func defaults() map[string]string {
	return map[string]string{
		"instance/preempted":                      "FALSE",
		"instance/maintenance-event":              "NONE",
		"instance/name":                           DefaultInstanceName,
		"instance/hostname":                       DefaultInstanceName + ".us-central1-a.c." + DefaultProjectID + ".internal",
		"instance/id":                             DefaultInstanceID,
		"instance/zone":                           DefaultZone,
		"instance/scheduling/preemptible":         "TRUE",
		"instance/scheduling/provisioning-model":  "SPOT",
		"instance/scheduling/on-host-maintenance": "TERMINATE",
		"project/project-id":                      DefaultProjectID,
		"project/numeric-project-id":              "123",
	}
}

// entry is one metadata value. changed is closed, and replaced, whenever the
// value is set, waking every long poll on it.
type entry struct {
	value      string
	generation uint64
	etag       string
	changed    chan struct{}
}

// Server is a running fake metadata server on 127.0.0.1.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	// closeOnce guards done and the HTTP server.
	closeOnce sync.Once

	mu       sync.Mutex
	values   map[string]*entry
	requests map[string]int
	// generation counts every Set, so that an ETag never repeats.
	generation uint64
}

// Start runs a Server on a free port of 127.0.0.1.
func Start() (*Server, error) { return StartOn("127.0.0.1:0") }

// StartOn runs a Server on addr, for example the Host of a closed Server to
// bring the metadata service "back" on the same address.
func StartOn(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gcemeta: listening on %s: %w", addr, err)
	}
	s := &Server{
		ln:       ln,
		done:     make(chan struct{}),
		values:   map[string]*entry{},
		requests: map[string]int{},
	}
	for p, v := range defaults() {
		s.setLocked(p, v)
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
	}
	go s.srv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed on Close.
	return s, nil
}

// Host is host:port of the server, the value for GCE_METADATA_HOST.
func (s *Server) Host() string { return s.ln.Addr().String() }

// Set sets the value at path (for example "instance/preempted"), creating
// it if needed. It gives the path a new ETag and wakes its long polls, even
// when the value is unchanged.
func (s *Server) Set(path, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(strings.Trim(path, "/"), value)
}

// Delete removes path: it then answers 404, and its long polls answer 404.
func (s *Server) Delete(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path = strings.Trim(path, "/")
	if e, ok := s.values[path]; ok {
		close(e.changed)
		delete(s.values, path)
	}
}

// Get returns the value at path and whether it exists.
func (s *Server) Get(path string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.values[strings.Trim(path, "/")]
	if !ok {
		return "", false
	}
	return e.value, true
}

// Requests is how many requests path (without query) received, with or
// without the Metadata-Flavor header.
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[strings.Trim(path, "/")]
}

// Close stops the server: it answers every long poll in flight, closes
// every connection and frees the port.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	})
}

func (s *Server) setLocked(path, value string) {
	s.generation++
	e, ok := s.values[path]
	if !ok {
		e = &entry{changed: make(chan struct{})}
		s.values[path] = e
	} else {
		close(e.changed)
		e.changed = make(chan struct{})
	}
	e.value = value
	e.generation = s.generation
	e.etag = etag(path, value, s.generation)
}

// etag is 16 hex digits, like the real server's.
func etag(path, value string, generation uint64) string {
	h := sha256.New()
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write([]byte(value))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], generation)
	h.Write(b[:])
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(flavorHeader, flavor)
	w.Header().Set("Server", "Metadata Server for VM")
	if r.URL.Path == "/" {
		// The root answers anyone: OnGCE-style probes look for the header.
		w.Header().Set("Content-Type", "application/text")
		fmt.Fprint(w, "computeMetadata/\n")
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	path = strings.Trim(path, "/")
	s.mu.Lock()
	s.requests[path]++
	s.mu.Unlock()

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get(flavorHeader) != flavor {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		// The real server refuses requests that went through a proxy.
		http.Error(w, "Request contains X-Forwarded-For header.", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	wait := false
	if v := q.Get("wait_for_change"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, "invalid wait_for_change", http.StatusBadRequest)
			return
		}
		wait = b
	}
	timeout := DefaultWaitTimeout
	if v := q.Get("timeout_sec"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "invalid timeout_sec", http.StatusBadRequest)
			return
		}
		timeout = time.Duration(n) * time.Second
	}
	lastETag, hasETag := q["last_etag"]

	value, tag, err := s.lookup(r.Context(), path, wait, hasETag, strings.Join(lastETag, ""), timeout)
	switch {
	case errors.Is(err, errNotFound):
		http.NotFound(w, r)
		return
	case err != nil:
		// The client went away, or the server is closing: drop the
		// connection without an answer, as a metadata server that died
		// would.
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Content-Type", "application/text")
	w.Header().Set("ETag", tag)
	fmt.Fprint(w, value)
}

var errNotFound = errors.New("not found")

// lookup returns the value at path. With wait, it first blocks until the
// ETag differs from lastETag (or, without a last_etag, until the next
// change), timeout passes, ctx ends or the server closes.
func (s *Server) lookup(ctx context.Context, path string, wait, hasETag bool, lastETag string, timeout time.Duration) (value, tag string, err error) {
	s.mu.Lock()
	e, ok := s.values[path]
	if !ok {
		s.mu.Unlock()
		return "", "", errNotFound
	}
	if !wait || (hasETag && e.etag != lastETag) {
		defer s.mu.Unlock()
		return e.value, e.etag, nil
	}
	changed := e.changed
	s.mu.Unlock()

	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return "", "", ctx.Err()
	case <-s.done:
		return "", "", errors.New("server closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok = s.values[path]
	if !ok {
		return "", "", errNotFound
	}
	return e.value, e.etag, nil
}
