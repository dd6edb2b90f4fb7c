package moto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned by Start when neither moto_server nor
// "python3 -m moto.server" can run. The tests that need moto fail with it:
// they never skip.
var ErrNotInstalled = errors.New("moto_server is not installed: the SQS/EC2/Auto Scaling tests need it (pip install 'moto[server]')")

const (
	localhost = "127.0.0.1"
	// startTimeout bounds waiting for the server when ctx has no deadline.
	startTimeout = 60 * time.Second
	// pollInterval is how often Start checks that the server answers.
	pollInterval = 20 * time.Millisecond
	// portAttempts is how many free ports Start tries per command: another
	// process may take the port between choosing it and moto binding it.
	portAttempts = 3
	// logLines is how much of the server's output errors quote.
	logLines = 20
)

// command is one way of running moto's server.
type command struct {
	name string
	args []string
}

// Server is a running moto_server.
type Server struct {
	url     string
	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	started time.Duration

	stopOnce sync.Once
}

// Start runs moto_server (or, when it is not on PATH, "python3 -m
// moto.server") on a free port of 127.0.0.1 and returns once it answers
// HTTP. ctx bounds the start only; the server runs until Stop. When neither
// command can run moto, the error wraps ErrNotInstalled.
func Start(ctx context.Context) (*Server, error) {
	cmds := commands()
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%w (neither moto_server nor python3 is on PATH)", ErrNotInstalled)
	}
	dir, err := os.MkdirTemp("", "moto-")
	if err != nil {
		return nil, fmt.Errorf("creating the moto directory: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	var errs []error
	missing := 0
	attempt := 0
	for _, c := range cmds {
		for range portAttempts {
			s, res, err := start(ctx, c, dir, attempt)
			attempt++
			if err == nil {
				return s, nil
			}
			errs = append(errs, err)
			if res == retryPort && ctx.Err() == nil {
				continue
			}
			if res == notInstalled {
				missing++
			}
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	if missing == len(cmds) {
		return nil, fmt.Errorf("%w: %w", ErrNotInstalled, errors.Join(errs...))
	}
	return nil, fmt.Errorf("starting moto_server: %w", errors.Join(errs...))
}

// commands lists the ways of running moto found on PATH, best first.
func commands() []command {
	var cmds []command
	if p, err := exec.LookPath("moto_server"); err == nil {
		cmds = append(cmds, command{name: p})
	}
	if p, err := exec.LookPath("python3"); err == nil {
		cmds = append(cmds, command{name: p, args: []string{"-m", "moto.server"}})
	}
	return cmds
}

// outcome says what a failed start means for the next attempt.
type outcome int

const (
	failed       outcome = iota // give up on this command
	retryPort                   // the port was taken: another may work
	notInstalled                // this command has no moto behind it
)

// start runs moto once with c.
func start(ctx context.Context, c command, dir string, attempt int) (*Server, outcome, error) {
	port, err := freePort()
	if err != nil {
		return nil, failed, err
	}
	args := append(append([]string{}, c.args...), "-H", localhost, "-p", strconv.Itoa(port))

	logPath := filepath.Join(dir, fmt.Sprintf("moto-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, failed, fmt.Errorf("creating the moto log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor

	begin := time.Now()
	cmd := exec.Command(c.name, args...)
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, notInstalled, fmt.Errorf("running %s: %w", c.name, err)
	}
	s := &Server{
		url:     "http://" + net.JoinHostPort(localhost, strconv.Itoa(port)),
		dir:     dir,
		logPath: logPath,
		cmd:     cmd,
		exited:  make(chan struct{}),
	}
	go func() {
		cmd.Wait() //nolint:errcheck // the exit is reported through s.exited
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.kill()
		log := s.logTail(logLines)
		res := failed
		switch lower := strings.ToLower(log); {
		case strings.Contains(lower, "address already in use"):
			res = retryPort
		case strings.Contains(lower, "no module named"), strings.Contains(lower, "command not found"):
			res = notInstalled
		}
		return nil, res, fmt.Errorf("%s %s: %w\n%s", c.name, strings.Join(args, " "), err, log)
	}
	s.started = time.Since(begin)
	return s, failed, nil
}

// waitReady polls until the server answers any HTTP response.
func (s *Server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/moto-api/", nil)
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
			return fmt.Errorf("waiting for it to answer on %s: %w", s.url, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// URL is the server's base URL, "http://127.0.0.1:<port>": the BaseEndpoint
// of every SDK client (SQS, EC2, Auto Scaling).
func (s *Server) URL() string { return s.url }

// StartupTime is how long the server took to answer after its process was
// started.
func (s *Server) StartupTime() time.Duration { return s.started }

// LogPath is the file holding the server's output. It is removed by Stop.
func (s *Server) LogPath() string { return s.logPath }

// Reset drops all of moto's state (queues, groups, instances, ...) with
// POST /moto-api/reset.
func (s *Server) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("building the moto reset request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("resetting moto: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("resetting moto: HTTP %s", resp.Status)
	}
	return nil
}

// Stop kills the server, waits for it to exit and removes its directory.
// It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.kill()
		os.RemoveAll(s.dir)
	})
}

// kill ends the process group and waits for the exit.
func (s *Server) kill() {
	// The negative pid names the process group Setpgid created: the pyenv
	// shim and the Python interpreter it runs.
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // it may be gone already
	<-s.exited
}

// logTail returns the last n lines of the server's output.
func (s *Server) logTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment without AWS_* variables, which botocore
// inside moto reads (an empty AWS_PROFILE, inherited from a test's
// t.Setenv, makes moto answer 500 to every request), and with the shared
// AWS files pointed at missing files in dir, so that the machine's
// ~/.aws does not change moto's answers. MOTO_* variables, moto's own
// settings, are kept.
func childEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "aws-credentials"))
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(localhost, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
