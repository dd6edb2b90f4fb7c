// Package nth runs aws-node-termination-handler (NTH) v1.25.6, built and
// cached by package test/tools, for one node of the local cluster in IMDS
// mode, as users run it, so that the benchmarks can measure it beside
// lastcall on the same control plane and the same metadata emulator.
//
// NTH reads only in-cluster configuration (rest.InClusterConfig): a token,
// CA and namespace under /var/run/secrets/kubernetes.io/serviceaccount, and
// KUBERNETES_SERVICE_HOST/PORT. Start gives it those the way a pod has
// them, without touching the host: NTH runs in a mount namespace of its own
// (unshare -m, private propagation) where a tmpfs on /run/secrets (and on
// /var/run/secrets when /var/run is not a link to /run) holds the three
// files. The token is a ServiceAccount's, bound to the ClusterRole NTH's own
// Helm chart grants (rendered from the module's source), and requested
// through the TokenRequest API. This needs root and unshare(1); without
// them Start fails, saying so. On the host only the mount point
// /run/secrets is left behind, as an empty directory, if it was missing.
//
// The settings are those of its IMDS mode with Helm's defaults otherwise
// (its client keeps client-go's default 5 requests a second, burst 10):
// spot interruption draining on, scheduled event draining off (AEMM's spot
// mode answers 404 for scheduled events, and NTH exits after a few
// identical errors), Prometheus server on, DELETE_LOCAL_DATA,
// IGNORE_DAEMON_SETS, TAINT_NODE and EXCLUDE_FROM_LOAD_BALANCERS on.
// Kubernetes Events stay off, as the chart has them: NTH sends them through
// the same rate-limited client as its drain. Its log says when a drain is
// done (DoneLine); Handler.WaitLog follows the log for it.
package nth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/test/chart"
	"github.com/lastcall/lastcall/test/emulators/child"
	"github.com/lastcall/lastcall/test/tools"
)

const (
	// Module is NTH's Go module.
	Module = "github.com/aws/aws-node-termination-handler"
	// chartDir is NTH's Helm chart inside its module.
	chartDir = "config/helm/aws-node-termination-handler"
	// name names the ServiceAccount, ClusterRole, binding and namespace, as
	// the chart does for a release of that name.
	name = "aws-node-termination-handler"

	// SpotTaint is the taint NTH puts on a node for a spot interruption
	// notice, before it cordons the node.
	SpotTaint = "aws-node-termination-handler/spot-itn"
	// DoneLine is what NTH logs once a node is cordoned and drained.
	DoneLine = "Node successfully cordoned and drained"
	// startedLine is what NTH logs once its monitors run.
	startedLine = "Started watching for interruption events"

	// startTimeout bounds waiting for NTH to start when ctx has no deadline.
	startTimeout = 60 * time.Second
	// stopGrace is how long NTH has to exit after SIGTERM: it waits for a
	// drain in progress, so it is killed after that.
	stopGrace = 5 * time.Second
)

// Binary builds NTH if the cache lacks it (about 3 minutes cold on 2 cores)
// and returns its path.
func Binary(ctx context.Context) (string, error) {
	return tools.Binary(ctx, tools.NTH, "node-termination-handler")
}

// ClusterRole renders the ClusterRole of NTH's Helm chart, from its module
// source, with the chart's default values.
func ClusterRole(ctx context.Context) (*rbacv1.ClusterRole, error) {
	src, err := tools.ModuleSourceDir(ctx, tools.NTH, Module)
	if err != nil {
		return nil, err
	}
	out, err := chart.Helm(ctx, "template", name, filepath.Join(src, chartDir),
		"--namespace", name, "--show-only", "templates/clusterrole.yaml")
	if err != nil {
		return nil, fmt.Errorf("rendering NTH's ClusterRole: %w", err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(out, &role); err != nil {
		return nil, fmt.Errorf("reading NTH's ClusterRole: %w", err)
	}
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		return nil, fmt.Errorf("NTH's chart rendered no ClusterRole rules:\n%s", out)
	}
	return &role, nil
}

// Credentials are what NTH finds as its in-cluster configuration.
type Credentials struct {
	Host, Port string // KUBERNETES_SERVICE_HOST and _PORT
	CA         []byte // ca.crt: the API server's self-signed certificate
	Token      string
	Namespace  string
}

// Grant makes (or finds) NTH's namespace, ServiceAccount, the chart's
// ClusterRole and its binding, and requests a token for the ServiceAccount,
// valid for a day. cfg is the admin configuration: the API server's address
// and CA come from it.
func Grant(ctx context.Context, client kubernetes.Interface, cfg *rest.Config) (Credentials, error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return Credentials{}, fmt.Errorf("API server address %q: want https://host:port (%v)", cfg.Host, err)
	}
	if len(cfg.CAData) == 0 {
		return Credentials{}, errors.New("the admin configuration carries no CA data")
	}
	role, err := ClusterRole(ctx)
	if err != nil {
		return Credentials{}, err
	}
	meta := metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": name}}
	role.ObjectMeta = meta
	creates := []func() error{
		func() error {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: meta}, metav1.CreateOptions{})
			return err
		},
		func() error {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: name}}
			_, err := client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
			return err
		},
		func() error {
			b := &rbacv1.ClusterRoleBinding{
				ObjectMeta: meta,
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: name}},
			}
			_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range creates {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return Credentials{}, fmt.Errorf("granting NTH its chart's permissions: %w", err)
		}
	}
	day := int64(24 * time.Hour / time.Second)
	tr, err := client.CoreV1().ServiceAccounts(name).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &day}}, metav1.CreateOptions{})
	if err != nil {
		return Credentials{}, fmt.Errorf("requesting a token for NTH's ServiceAccount: %w", err)
	}
	return Credentials{Host: u.Hostname(), Port: u.Port(), CA: cfg.CAData, Token: tr.Status.Token, Namespace: name}, nil
}

// Config says how to run NTH.
type Config struct {
	// Binary is NTH's path (see Binary).
	Binary string
	// Node is the node it handles (NODE_NAME).
	Node string
	// IMDS is the instance metadata service's URL (INSTANCE_METADATA_URL).
	IMDS string
	// Credentials are its in-cluster configuration (see Grant).
	Credentials Credentials
	// LogPath receives its output.
	LogPath string
	// Cgroup, when set, is the directory of a cgroup the process joins
	// before NTH starts, so all its memory is charged there.
	Cgroup string
	// Env are extra NAME=value settings, after the defaults.
	Env []string
}

// Handler is a running NTH.
type Handler struct {
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	secrets string
	stop    sync.Once
	stopErr error
	// MetricsAddr is host:port of its Prometheus server.
	MetricsAddr string
	// LogPath is the file holding its output.
	LogPath string
}

// Preflight says why NTH cannot be run here, or nil: Start needs root and
// unshare(1) for NTH's mount namespace.
func Preflight() error {
	return preflight(os.Geteuid, exec.LookPath)
}

func preflight(euid func() int, lookPath func(string) (string, error)) error {
	if euid() != 0 {
		return errors.New("nth: running aws-node-termination-handler needs root: it reads only in-cluster " +
			"credentials, which it is given in a mount namespace of its own (unshare -m and a tmpfs on /run/secrets)")
	}
	if _, err := lookPath("unshare"); err != nil {
		return fmt.Errorf("nth: unshare(1) not found (Debian package util-linux); it gives "+
			"aws-node-termination-handler a mount namespace for its in-cluster credentials: %w", err)
	}
	return nil
}

// setup runs as the process that becomes NTH, in its new mount namespace:
// it joins the cgroup, mounts a tmpfs holding the service account files on
// each mount point, then becomes NTH (same PID).
const setup = `set -eu
src=$1 bin=$2 cg=$3
shift 3
if [ -n "$cg" ]; then echo $$ > "$cg/cgroup.procs"; fi
for m in "$@"; do
	mkdir -p "$m"
	mount -t tmpfs -o mode=0755,size=1m lastcall-nth-secrets "$m"
	mkdir -p "$m/kubernetes.io/serviceaccount"
	cp "$src/token" "$src/ca.crt" "$src/namespace" "$m/kubernetes.io/serviceaccount/"
done
exec "$bin"
`

// mountPoints are where NTH's service account files go: /run/secrets, and
// /var/run/secrets too unless /var/run is /run.
func mountPoints() []string {
	points := []string{"/run/secrets"}
	if dir, err := filepath.EvalSymlinks("/var/run"); err != nil || dir != "/run" {
		points = append(points, "/var/run/secrets")
	}
	return points
}

// Start runs NTH with cfg and returns once it watches for interruption
// events. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Handler, error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	unshare, _ := exec.LookPath("unshare")
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	secrets, err := os.MkdirTemp("", "lastcall-nth-sa-")
	if err != nil {
		return nil, err
	}
	cr := cfg.Credentials
	for file, data := range map[string][]byte{"token": []byte(cr.Token), "ca.crt": cr.CA, "namespace": []byte(cr.Namespace)} {
		if err := os.WriteFile(filepath.Join(secrets, file), data, 0o600); err != nil {
			os.RemoveAll(secrets)
			return nil, err
		}
	}
	port, err := child.FreePort()
	if err != nil {
		os.RemoveAll(secrets)
		return nil, err
	}
	logf, err := os.Create(cfg.LogPath)
	if err != nil {
		os.RemoveAll(secrets)
		return nil, err
	}
	defer logf.Close()

	args := append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", setup, "nth-setup",
		secrets, cfg.Binary, cfg.Cgroup}, mountPoints()...)
	cmd := exec.Command(unshare, args...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + secrets,
		"KUBERNETES_SERVICE_HOST=" + cr.Host,
		"KUBERNETES_SERVICE_PORT=" + cr.Port,
		"NODE_NAME=" + cfg.Node,
		"INSTANCE_METADATA_URL=" + cfg.IMDS,
		"ENABLE_SPOT_INTERRUPTION_DRAINING=true",
		"ENABLE_SCHEDULED_EVENT_DRAINING=false",
		"ENABLE_PROMETHEUS_SERVER=true",
		"PROMETHEUS_SERVER_PORT=" + strconv.Itoa(port),
		"DELETE_LOCAL_DATA=true",
		"IGNORE_DAEMON_SETS=true",
		"TAINT_NODE=true",
		"EXCLUDE_FROM_LOAD_BALANCERS=true",
	}, cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(secrets)
		return nil, fmt.Errorf("starting aws-node-termination-handler: %w", err)
	}
	h := &Handler{cmd: cmd, done: make(chan struct{}), secrets: secrets,
		MetricsAddr: net.JoinHostPort(child.Localhost, strconv.Itoa(port)), LogPath: cfg.LogPath}
	go func() { h.waitErr = cmd.Wait(); close(h.done) }()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.done:
			cancel()
		case <-wctx.Done():
		}
	}()
	if _, err := h.WaitLog(wctx, startedLine); err != nil {
		h.Stop()
		select {
		case <-h.done:
			return nil, fmt.Errorf("aws-node-termination-handler exited while starting (%v):\n%s", h.waitErr, tail(cfg.LogPath, 20))
		default:
		}
		return nil, fmt.Errorf("aws-node-termination-handler not started: %w\n%s", err, tail(cfg.LogPath, 20))
	}
	return h, nil
}

// PID is NTH's process ID.
func (h *Handler) PID() int { return h.cmd.Process.Pid }

// WaitLog follows the log from its start until a line contains s, and
// returns when that line was read: within a few milliseconds of NTH
// writing it.
func (h *Handler) WaitLog(ctx context.Context, s string) (time.Time, error) {
	return child.WaitLine(ctx, h.LogPath, s)
}

// Stop sends SIGTERM, waits up to stopGrace, then kills. It returns the
// exit error; calling it again returns the same.
func (h *Handler) Stop() error {
	h.stop.Do(func() {
		_ = syscall.Kill(-h.PID(), syscall.SIGTERM)
		select {
		case <-h.done:
			h.stopErr = h.waitErr
		case <-time.After(stopGrace):
			_ = syscall.Kill(-h.PID(), syscall.SIGKILL)
			<-h.done
		}
		os.RemoveAll(h.secrets)
	})
	return h.stopErr
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
