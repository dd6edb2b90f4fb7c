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
	"time"

	"github.com/lastcall/lastcall/test/emulators/child"
)

// ErrNotInstalled is returned by Start when neither moto_server nor
// "python3 -m moto.server" can run. The tests that need moto fail with it:
// they never skip.
var ErrNotInstalled = errors.New("moto_server is not installed: the SQS/EC2/Auto Scaling tests need it (pip install 'moto[server]')")

const (
	// startTimeout bounds waiting for the server when ctx has no deadline.
	startTimeout = 60 * time.Second
	// portAttempts is how many free ports Start tries per command: another
	// process may take the port between choosing it and moto binding it.
	portAttempts = 3
)

// command is one way of running moto's server.
type command struct {
	name string
	args []string
}

// Server is a running moto_server: URL, LogPath and Stop come from
// child.Server.
type Server struct {
	*child.Server
	started time.Duration
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
	port, err := child.FreePort()
	if err != nil {
		return nil, failed, err
	}
	begin := time.Now()
	srv, err := child.Start(ctx, child.Spec{
		Bin: c.name, Args: append(append([]string{}, c.args...), "-H", child.Localhost, "-p", strconv.Itoa(port)),
		Env: childEnv(dir), Dir: dir, LogPath: filepath.Join(dir, fmt.Sprintf("moto-%d.log", attempt)),
		URL: "http://" + net.JoinHostPort(child.Localhost, strconv.Itoa(port)), ReadyPath: "/moto-api/",
	})
	if err != nil {
		res := failed
		switch lower := strings.ToLower(err.Error()); {
		case strings.HasPrefix(lower, "running "):
			res = notInstalled // the command itself could not be started
		case strings.Contains(lower, "address already in use"):
			res = retryPort
		case strings.Contains(lower, "no module named"), strings.Contains(lower, "command not found"):
			res = notInstalled
		}
		return nil, res, err
	}
	return &Server{Server: srv, started: time.Since(begin)}, failed, nil
}

// StartupTime is how long the server took to answer after its process was
// started.
func (s *Server) StartupTime() time.Duration { return s.started }

// Reset drops all of moto's state (queues, groups, instances, ...) with
// POST /moto-api/reset.
func (s *Server) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/moto-api/reset", nil)
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
