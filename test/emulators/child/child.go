// Package child runs an HTTP server program for the tests, the demo and the
// benchmarks: on 127.0.0.1, in a process group of its own that the kernel
// kills if the thread that started it dies, with its output in a log file
// whose tail goes into errors. The emulators (AEMM, moto) are built on it.
package child

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Localhost is the only address servers bind.
const Localhost = "127.0.0.1"

// pollInterval paces the readiness checks.
const pollInterval = 20 * time.Millisecond

// Spec says what to run.
type Spec struct {
	Bin  string
	Args []string
	Env  []string
	// Dir is the working directory; Stop removes it.
	Dir     string
	LogPath string
	// URL is the server's base URL; ReadyPath is requested under it until
	// any HTTP answer comes.
	URL, ReadyPath string
}

// Server is a running program.
type Server struct {
	spec     Spec
	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
}

// Start runs spec and returns once the server answers HTTP. If it does
// not, it is killed and the error ends with the tail of its log. ctx
// bounds the start only.
func Start(ctx context.Context, spec Spec) (*Server, error) {
	logFile, err := os.Create(spec.LogPath)
	if err != nil {
		return nil, fmt.Errorf("creating the log of %s: %w", spec.Bin, err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(spec.Bin, spec.Args...)
	cmd.Dir, cmd.Env = spec.Dir, spec.Env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", spec.Bin, err)
	}
	s := &Server{spec: spec, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait() //nolint:errcheck // the exit is reported through s.exited
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Kill()
		return nil, fmt.Errorf("%s %s: %w\n%s", spec.Bin, strings.Join(spec.Args, " "), err, s.Tail(20))
	}
	// Another program may have bound the port between its pick and this
	// server's bind, and answered the readiness check; this server then
	// exits, or would serve nothing. Callers retry on another port.
	if u, err := url.Parse(spec.URL); err == nil {
		if port, err := strconv.Atoi(u.Port()); err == nil {
			owned, err := listenerOwned(port, cmd.Process.Pid)
			if err == nil && !owned {
				s.Kill()
				return nil, fmt.Errorf("%s: address already in use: port %d answers, but not from this server\n%s", spec.Bin, port, s.Tail(20))
			}
		}
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.spec.URL+s.spec.ReadyPath, nil)
		if err != nil {
			return fmt.Errorf("building the readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before answering (%s)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("waiting for it to answer on %s: %w", s.spec.URL, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// URL is the server's base URL.
func (s *Server) URL() string { return s.spec.URL }

// LogPath is the file holding the server's output. Stop removes it with
// the working directory.
func (s *Server) LogPath() string { return s.spec.LogPath }

// PID is the server's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Dir is the server's working directory.
func (s *Server) Dir() string { return s.spec.Dir }

// Kill ends the process group (SIGKILL) and waits for the exit.
func (s *Server) Kill() {
	killGroup(s.cmd.Process) //nolint:errcheck // it may be gone already
	<-s.exited
}

// Stop kills the server and removes its working directory. It is safe to
// call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.Kill()
		os.RemoveAll(s.spec.Dir)
	})
}

// Tail returns the last n lines of the server's output.
func (s *Server) Tail(n int) string {
	b, err := os.ReadFile(s.spec.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
