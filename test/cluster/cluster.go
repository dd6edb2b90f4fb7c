// Package cluster runs a real, local Kubernetes control plane for integration
// tests, the demo and benchmarks: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok (which plays the kubelet
// of fake nodes), all on 127.0.0.1 and on free ports, built and cached by
// package test/tools.
//
// Start brings one up and Stop tears it down; Main does both around a test
// package's tests. Every child process lives in its own process group, is
// killed by the kernel if the process that started it dies, and writes its
// output to <Dir>/logs/<name>.log.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/lastcall/lastcall/test/tools"

	"github.com/lastcall/lastcall/test/emulators/child"
)

// The names of the components, which also name their log files.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Kwok              = "kwok"
)

// Defaults of the options.
const (
	defaultStartTimeout = 60 * time.Second
	defaultWaitTimeout  = 60 * time.Second
	// buildNoticeAfter is when Start says it is building, not just finding,
	// the binaries.
	buildNoticeAfter = 3 * time.Second
	// startAttempts is how often Start tries when ports are taken.
	startAttempts = 3
)

// Cluster is a running local control plane. Its exported fields are set by
// Start and must not be changed.
type Cluster struct {
	// Dir holds the kubeconfig, the PKI, etcd's data and the log of every
	// process (<Dir>/logs/<name>.log).
	Dir string
	// Kubeconfig is the path of an admin kubeconfig (token authentication,
	// the apiserver's self-signed certificate as CA).
	Kubeconfig string
	// Config is the admin client configuration, with no client-side rate
	// limiter (QPS -1).
	Config *rest.Config
	// Client is a clientset made from Config.
	Client kubernetes.Interface
	// Kubectl is the path of the kubectl binary matching the apiserver.
	Kubectl string
	// StartupTime is how long Start took, finding or building the binaries
	// included.
	StartupTime time.Duration
	// BuildTime is the part of StartupTime spent finding or building the
	// binaries.
	BuildTime time.Duration

	opts options
	bins binaries
	addr addresses

	mu      sync.Mutex
	procs   []*process // in start order
	stopped bool       // Stop has begun

	stopOnce sync.Once
}

// addresses are the ports and files chosen at start-up.
type addresses struct {
	etcdClientPort int
	etcdPeerPort   int
	apiserverPort  int
	kwokPort       int
	token          string
	tokenFile      string
	saKeyFile      string
	certDir        string
	caFile         string // written by kube-apiserver into certDir
	stagesFile     string
}

// Option changes how Start builds the cluster.
type Option func(*options)

type options struct {
	logf         func(format string, args ...any)
	keepDir      bool
	startTimeout time.Duration
	waitTimeout  time.Duration
	parentDir    string
}

// WithLogf sets where the cluster reports progress (start-up time, processes
// exiting unexpectedly). By default, or if logf is nil, it reports nothing.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) {
		if logf != nil {
			o.logf = logf
		}
	}
}

// WithKeepDir keeps Dir (logs, etcd data) after Stop, for debugging.
func WithKeepDir(keep bool) Option {
	return func(o *options) { o.keepDir = keep }
}

// WithStartTimeout bounds the start of the processes, once the binaries are
// there (default 60 s). Building the binaries is bounded by Start's ctx only.
func WithStartTimeout(d time.Duration) Option {
	return func(o *options) { o.startTimeout = d }
}

// WithWaitTimeout bounds AddNode, CreateNamespace, WaitPodsReady and
// RestartAPIServer when their ctx has no deadline (default 60 s).
func WithWaitTimeout(d time.Duration) Option {
	return func(o *options) { o.waitTimeout = d }
}

// WithParentDir makes Dir under parent instead of the system's temporary
// directory.
func WithParentDir(parent string) Option {
	return func(o *options) { o.parentDir = parent }
}

// binaries are the paths of the programs the cluster runs.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kwok, kubectl string
	// kwokModuleDir is the kwok module's source, for its stage manifests.
	kwokModuleDir string
}

// findBinaries builds the tools if needed and returns their paths.
func findBinaries(ctx context.Context) (binaries, error) {
	var b binaries
	for _, want := range []struct {
		tool tools.Tool
		name string
		path *string
	}{
		{tools.Etcd, "etcd", &b.etcd},
		{tools.Kubernetes, APIServer, &b.apiserver},
		{tools.Kubernetes, ControllerManager, &b.controllerManager},
		{tools.Kubernetes, Scheduler, &b.scheduler},
		{tools.Kubernetes, "kubectl", &b.kubectl},
		{tools.Kwok, "kwok", &b.kwok},
	} {
		p, err := tools.Binary(ctx, want.tool, want.name)
		if err != nil {
			return binaries{}, fmt.Errorf("building %s: %w", want.name, err)
		}
		*want.path = p
	}
	dir, err := tools.ModuleSourceDir(ctx, tools.Kwok, "sigs.k8s.io/kwok")
	if err != nil {
		return binaries{}, fmt.Errorf("locating the kwok module: %w", err)
	}
	b.kwokModuleDir = dir
	return b, nil
}

// Start builds the binaries if needed (a cold build takes minutes) and starts
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok. It
// returns once /readyz answers ok, the "default" ServiceAccount of namespace
// default exists and kwok is serving. On error, everything started is
// stopped; the error names the component that failed and ends with the tail
// of its log. If a port was taken between being picked and being bound,
// Start tries again with other ports.
func Start(ctx context.Context, opts ...Option) (*Cluster, error) {
	o := options{
		logf:         func(string, ...any) {},
		startTimeout: defaultStartTimeout,
		waitTimeout:  defaultWaitTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	begin := time.Now()
	notice := time.AfterFunc(buildNoticeAfter, func() {
		o.logf("cluster: building etcd, the Kubernetes control plane and kwok (a cold build takes about 6 minutes)")
	})
	bins, err := findBinaries(ctx)
	notice.Stop()
	if err != nil {
		return nil, err
	}
	buildTime := time.Since(begin)
	for attempt := 1; ; attempt++ {
		c, timings, err := startOnce(ctx, o, bins)
		if err == nil {
			c.BuildTime, c.StartupTime = buildTime, time.Since(begin)
			o.logf("cluster: up in %s (binaries %s, %s); kubeconfig %s",
				c.StartupTime.Round(time.Millisecond), buildTime.Round(time.Millisecond), timings, c.Kubeconfig)
			return c, nil
		}
		if attempt == startAttempts || !errors.Is(err, errPortInUse) {
			return nil, err
		}
		o.logf("cluster: attempt %d of %d failed, a port was taken; trying other ports:\n%v", attempt, startAttempts, err)
	}
}

// startOnce starts the processes in a new directory, and stops them and
// removes the directory if they do not all come up. It also returns how long
// each step took.
func startOnce(ctx context.Context, o options, bins binaries) (_ *Cluster, timings string, err error) {
	dir, err := os.MkdirTemp(o.parentDir, "lastcall-cluster-")
	if err != nil {
		return nil, "", fmt.Errorf("making the cluster directory: %w", err)
	}
	c := &Cluster{
		Dir:        dir,
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
		Kubectl:    bins.kubectl,
		opts:       o,
		bins:       bins,
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	ctx, cancel := context.WithTimeoutCause(ctx, o.startTimeout,
		fmt.Errorf("cluster not up within %s", o.startTimeout))
	defer cancel()
	timings, err = c.boot(ctx)
	if err != nil {
		return nil, "", err
	}
	return c, timings, nil
}

// boot prepares the files and starts the processes in order. It returns
// how long each step took, for the start-up log.
func (c *Cluster) boot(ctx context.Context) (string, error) {
	var timings []string
	for _, step := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"files", func(context.Context) error { return c.prepare() }},
		{Etcd + " and " + APIServer, c.startStorage},
		{"controllers", func(ctx context.Context) error {
			if err := c.connect(); err != nil {
				return err
			}
			return c.startControllers(ctx)
		}},
	} {
		begin := time.Now()
		if err := step.run(ctx); err != nil {
			return "", err
		}
		timings = append(timings, fmt.Sprintf("%s %s", step.name, time.Since(begin).Round(time.Millisecond)))
	}
	return strings.Join(timings, ", "), nil
}

// prepare makes the directories, ports, credentials and kwok's stages.
func (c *Cluster) prepare() error {
	for _, sub := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("making the cluster directory: %w", err)
		}
	}
	ports, err := child.FreePorts(4)
	if err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	pki := filepath.Join(c.Dir, "pki")
	c.addr = addresses{
		etcdClientPort: ports[0],
		etcdPeerPort:   ports[1],
		apiserverPort:  ports[2],
		kwokPort:       ports[3],
		token:          token,
		tokenFile:      filepath.Join(pki, "tokens.csv"),
		saKeyFile:      filepath.Join(pki, "service-account.key"),
		certDir:        pki,
		caFile:         filepath.Join(pki, "apiserver.crt"),
		stagesFile:     filepath.Join(c.Dir, "kwok-stages.yaml"),
	}
	if err := writeTokenFile(c.addr.tokenFile, token); err != nil {
		return err
	}
	if err := writeServiceAccountKey(c.addr.saKeyFile); err != nil {
		return err
	}
	return writeKwokStages(c.addr.stagesFile, c.bins.kwokModuleDir)
}

// startProcess starts one component and records it for Stop. It refuses
// once Stop has begun, so that nothing started concurrently escapes it.
func (c *Cluster) startProcess(name, bin string, args []string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, fmt.Errorf("starting %s: the cluster is stopped", name)
	}
	p, err := startProcess(c.Dir, name, bin, args, c.reportExit)
	if err != nil {
		return nil, err
	}
	for i, old := range c.procs {
		if old.name == name {
			c.procs[i] = p
			return p, nil
		}
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// process returns the running process of a component, or nil.
func (c *Cluster) process(name string) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// reportExit logs a process that exited without Stop.
func (c *Cluster) reportExit(p *process) {
	c.opts.logf("cluster: %v\n--- last %d lines of %s ---\n%s\n---",
		p.exitError(), logTailLines, p.logPath, p.logTail(logTailLines))
}

// Stop stops every process the cluster started, by PID (SIGTERM, then
// SIGKILL after a few seconds), and removes Dir unless WithKeepDir(true) was
// given. It is safe to call more than once and from several goroutines.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopped = true
		procs := append([]*process(nil), c.procs...)
		c.mu.Unlock()
		// Stop the clients of etcd together, then etcd.
		var wg sync.WaitGroup
		for _, p := range procs {
			if p.name != Etcd {
				wg.Go(p.stop)
			}
		}
		wg.Wait()
		for _, p := range procs {
			p.stop()
		}
		if c.opts.keepDir {
			c.opts.logf("cluster: stopped; kept %s", c.Dir)
			return
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			c.opts.logf("cluster: removing %s: %v", c.Dir, err)
		}
	})
}

// PID returns the process ID of a running component (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler or kwok), or 0 if it is not
// running. Fault tests may signal it; Stop still stops it.
func (c *Cluster) PID(component string) int {
	p := c.process(component)
	if p == nil || !p.running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// KubectlCommand returns a kubectl command using the admin kubeconfig.
func (c *Cluster) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// LogPath returns the path of a component's log file (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler or kwok).
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.Dir, "logs", component+".log")
}
