// Package agentproc builds the lastcall binary and runs it in a process of
// its own, as the demo, the benchmarks and the crash tests need: a real
// process, so that its memory and start-up are measured as deployed, and so
// that it can be killed.
package agentproc

import (
	"bufio"
	"context"
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

	"github.com/lastcall/lastcall/test/tools"
)

// Build compiles cmd/lastcall as it is shipped (CGO off, trimmed, stripped)
// into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := tools.RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "lastcall")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/lastcall")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building lastcall: %w\n%s", err, b)
	}
	return out, nil
}

// Agent is a running lastcall process.
type Agent struct {
	cmd     *exec.Cmd
	done    chan error
	stop    sync.Once
	stopErr error
	Addr    string // host:port of /metrics, /healthz, /readyz
	LogPath string // path of its log
}

// Config says how to run the agent; Env are extra LASTCALL_* settings.
type Config struct {
	Binary     string
	Node       string
	Kubeconfig string
	IMDS       string
	LogPath    string
	Env        []string
	// Cgroup, when set, is the directory of a cgroup the process joins
	// before lastcall starts, so all its memory is charged there.
	Cgroup string
}

// Start runs the agent with its default settings but for cfg, and returns
// once /readyz answers (its caches are synced).
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.Create(cfg.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(cfg.Binary)
	if cfg.Cgroup != "" {
		// The shell joins the cgroup, then becomes lastcall (same PID).
		cmd = exec.Command("/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$1"`, cfg.Cgroup, cfg.Binary)
	}
	cmd.Env = append(os.Environ(),
		"LASTCALL_NODE_NAME="+cfg.Node,
		"LASTCALL_KUBECONFIG="+cfg.Kubeconfig,
		"LASTCALL_IMDS_ENDPOINT="+cfg.IMDS,
		"LASTCALL_LISTEN_ADDRESS="+addr,
		"LASTCALL_LOG_FORMAT=text",
	)
	cmd.Env = append(cmd.Env, cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting lastcall: %w", err)
	}
	a := &Agent{cmd: cmd, done: make(chan error, 1), Addr: addr, LogPath: cfg.LogPath}
	go func() { a.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := a.get("/readyz"); err == nil {
			return a, nil
		}
		select {
		case err := <-a.done:
			return nil, fmt.Errorf("lastcall exited before it was ready (%v); see %s", err, cfg.LogPath)
		case <-ctx.Done():
			a.Stop()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.Stop()
			return nil, fmt.Errorf("lastcall not ready after 30s; see %s", cfg.LogPath)
		}
	}
}

func (a *Agent) get(path string) error {
	resp, err := http.Get("http://" + a.Addr + path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

// PID is the agent's process ID.
func (a *Agent) PID() int { return a.cmd.Process.Pid }

// Memory reads the agent's resident set size now and its peak, in bytes.
func (a *Agent) Memory() (rss, peak int64, err error) {
	st, err := Status(a.PID())
	return st["VmRSS"], st["VmHWM"], err
}

// Status reads the sizes /proc/<pid>/status gives in kB (VmRSS, VmHWM,
// RssAnon, RssFile, …), in bytes.
func Status(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if kb, found := strings.CutSuffix(strings.TrimSpace(v), " kB"); ok && found {
			n, _ := strconv.ParseInt(kb, 10, 64)
			out[k] = n << 10
		}
	}
	return out, s.Err()
}

// CPUTime is the agent's user plus system CPU time so far.
func (a *Agent) CPUTime() (time.Duration, error) { return ProcessCPU(a.PID()) }

// ProcessCPU is a process's user plus system CPU time so far.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// Kill ends the process at once (SIGKILL), as a crash or an OOM kill would:
// nothing is cleaned up.
func (a *Agent) Kill() {
	a.stop.Do(func() {
		_ = syscall.Kill(-a.PID(), syscall.SIGKILL)
		a.stopErr = <-a.done
	})
}

// Stop sends SIGTERM and waits up to 10 s for a clean exit, then kills.
// It returns the exit error; calling it again returns the same.
func (a *Agent) Stop() error {
	a.stop.Do(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case a.stopErr = <-a.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-a.PID(), syscall.SIGKILL)
			<-a.done
			a.stopErr = fmt.Errorf("lastcall did not exit within 10s of SIGTERM")
		}
	})
	return a.stopErr
}
