package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace bounds how long a process may take to exit after SIGTERM before
// it is killed. kube-apiserver with clients still watching usually needs the
// kill: it stops listening at once, then waits up to its request timeout
// (60 s) for the watch connections to go idle, which they never do.
const stopGrace = 3 * time.Second

// logTailLines is how many lines of a component's log go into an error.
const logTailLines = 30

// process is one child program of the cluster, with its output in a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd

	exited  chan struct{} // closed when the process has been reaped
	waitErr error         // set before exited is closed

	stopOnce sync.Once
	stopping chan struct{} // closed when stop was asked for
}

// startProcess starts bin with args, its output appended to
// <dir>/logs/<name>.log. The child gets its own process group and is killed
// by the kernel if this process dies (Pdeathsig), so it never outlives the
// test binary. onExit, if not nil, is called when the process exits without
// stop having been called.
func startProcess(dir, name, bin string, args []string, onExit func(p *process)) (*process, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", name, err)
	}
	defer logFile.Close() // the child keeps its own descriptor

	fmt.Fprintf(logFile, "### %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = childEnv(dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{
		name:     name,
		logPath:  logPath,
		cmd:      cmd,
		exited:   make(chan struct{}),
		stopping: make(chan struct{}),
	}
	go p.reap(onExit)
	return p, nil
}

// childEnv is the environment of every child: ours, with HOME pointed at the
// cluster directory so that no program reads the user's configuration
// (kwok reads ~/.kwok/kwok.yaml), and without KUBECONFIG.
func childEnv(dir string) []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir)
}

// reap waits for the process and reports an unexpected exit.
func (p *process) reap(onExit func(p *process)) {
	p.waitErr = p.cmd.Wait()
	close(p.exited)
	select {
	case <-p.stopping:
	default:
		if onExit != nil {
			onExit(p)
		}
	}
}

// exitError says that a process of the cluster is no longer running.
type exitError struct{ p *process }

func (e *exitError) Error() string {
	if e.p.waitErr != nil {
		return fmt.Sprintf("%s (pid %d) exited: %v", e.p.name, e.p.cmd.Process.Pid, e.p.waitErr)
	}
	return fmt.Sprintf("%s (pid %d) exited with status 0", e.p.name, e.p.cmd.Process.Pid)
}

// exitError waits for the process to exit and says how it did.
func (p *process) exitError() error {
	<-p.exited
	return &exitError{p: p}
}

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group the child leads, waits up to
// stopGrace, then sends SIGKILL. It returns once the child is reaped. It is
// safe to call more than once.
func (p *process) stop() {
	p.stopOnce.Do(func() { close(p.stopping) })
	if !p.running() {
		return
	}
	pid := p.cmd.Process.Pid
	// The child is the leader of its own group (Setpgid), so -pid names
	// exactly the group of the process we started.
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return
	case <-timer.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// logTail returns the last n lines of the process's log.
func (p *process) logTail(n int) string {
	return fileTail(p.logPath, n)
}

// fileTail returns the last n lines of a file, or a note saying why it
// cannot.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// constError is an error that can be a constant.
type constError string

func (e constError) Error() string { return string(e) }

// errPortInUse marks a start that failed because a port picked as free was
// taken before the program bound it.
const errPortInUse = constError("port already in use")

// componentError wraps err with the component's name and the tail of its log,
// and with errPortInUse if the log says a port was taken.
func componentError(p *process, err error) error {
	tail := p.logTail(logTailLines)
	if strings.Contains(tail, "address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("starting %s: %w\n--- last %d lines of %s ---\n%s\n---",
		p.name, err, logTailLines, p.logPath, tail)
}
