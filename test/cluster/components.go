package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// pollInterval is how often start-up checks are repeated.
const pollInterval = 50 * time.Millisecond

// requestTimeout bounds one health request.
const requestTimeout = 2 * time.Second

// controllers are the kube-controller-manager controllers the tests need:
// PDB status, ServiceAccounts, namespace deletion, garbage collection,
// Deployments, ReplicaSets, DaemonSets, node lifecycle (which removes the
// not-ready taint from new nodes), EndpointSlices (a Service's endpoints,
// which the traffic tests' balancers follow), and ResourceQuota usage
// (which quota admission needs before it enforces a quota).
const controllers = "disruption-controller,serviceaccount-controller,namespace-controller," +
	"garbage-collector-controller,replicaset-controller,deployment-controller," +
	"node-lifecycle-controller,daemonset-controller,endpointslice-controller,resourcequota-controller"

// kwokNodeAnnotation marks the nodes kwok manages.
const (
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	kwokNodeValue      = "fake"
)

// hostPort is 127.0.0.1:port.
func hostPort(port int) string {
	return net.JoinHostPort(localhost, strconv.Itoa(port))
}

// apiserverURL is the base URL of kube-apiserver.
func (c *Cluster) apiserverURL() string {
	return "https://" + hostPort(c.addr.apiserverPort)
}

// etcdArgs run a one-member etcd without fsync, for speed.
func (c *Cluster) etcdArgs() []string {
	client := "http://" + hostPort(c.addr.etcdClientPort)
	peer := "http://" + hostPort(c.addr.etcdPeerPort)
	return []string{
		"--name=default",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--unsafe-no-fsync",
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
	}
}

// apiserverArgs authenticate one admin by token, sign service account
// tokens with the generated key and let kube-apiserver make its own serving
// certificate in certDir. API Priority and Fairness stays on (the default).
func (c *Cluster) apiserverArgs() []string {
	return []string{
		"--etcd-servers=http://" + hostPort(c.addr.etcdClientPort),
		"--bind-address=" + localhost,
		"--advertise-address=" + localhost,
		"--secure-port=" + strconv.Itoa(c.addr.apiserverPort),
		"--cert-dir=" + c.addr.certDir,
		"--token-auth-file=" + c.addr.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + c.addr.saKeyFile,
		"--service-account-signing-key-file=" + c.addr.saKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none",
	}
}

// controllerManagerArgs run the controllers the tests need, without leader
// election or a serving port.
func (c *Cluster) controllerManagerArgs() []string {
	return []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=" + localhost,
		"--secure-port=0",
		"--controllers=" + controllers,
		"--service-account-private-key-file=" + c.addr.saKeyFile,
		"--root-ca-file=" + c.addr.caFile,
		"--use-service-account-credentials=false",
	}
}

// schedulerArgs run the default scheduler without leader election or a
// serving port.
func (c *Cluster) schedulerArgs() []string {
	return []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=" + localhost,
		"--secure-port=0",
	}
}

// kwokArgs make kwok manage the nodes annotated kwok.x-k8s.io/node=fake
// with the stages of kwok-stages.yaml, and serve /healthz on kwokPort.
func (c *Cluster) kwokArgs() []string {
	return []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--config=" + c.addr.stagesFile,
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=" + kwokNodeValue,
		"--node-ip=" + localhost,
		"--cidr=" + KwokPodCIDR,
		"--node-lease-duration-seconds=40",
		"--server-address=" + hostPort(c.addr.kwokPort),
	}
}

// startStorage starts etcd and, without waiting, kube-apiserver, which
// retries etcd until it answers: their start-ups overlap. It returns once
// etcd reports itself healthy and kube-apiserver's /readyz answers ok.
func (c *Cluster) startStorage(ctx context.Context) error {
	etcd, err := c.startProcess(Etcd, c.bins.etcd, c.etcdArgs())
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	apiserver, err := c.startProcess(APIServer, c.bins.apiserver, c.apiserverArgs())
	if err != nil {
		return fmt.Errorf("starting kube-apiserver: %w", err)
	}
	ctx, cancel := whileRunning(ctx, etcd, apiserver)
	defer cancel()
	if err := c.waitEtcd(ctx); err != nil {
		return blame(err, etcd)
	}
	if err := c.waitAPIServer(ctx); err != nil {
		return blame(err, apiserver)
	}
	return nil
}

// waitEtcd waits until etcd reports itself healthy.
func (c *Cluster) waitEtcd(ctx context.Context) error {
	url := "http://" + hostPort(c.addr.etcdClientPort) + "/health"
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	err := poll(ctx, func(ctx context.Context) error {
		return checkHTTP(ctx, hc, url, "", `"health":"true"`)
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", url, err)
	}
	return nil
}

// waitAPIServer waits until kube-apiserver's /readyz answers ok. The probe
// skips certificate checks because the certificate file is only surely
// complete once the server serves; connect then trusts it.
func (c *Cluster) waitAPIServer(ctx context.Context) error {
	hc := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // local readiness probe only
	}}
	url := c.apiserverURL() + "/readyz"
	err := poll(ctx, func(ctx context.Context) error {
		return checkHTTP(ctx, hc, url, c.addr.token, "ok")
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", url, err)
	}
	return nil
}

// connect makes Config, Client and the kubeconfig file, trusting the
// self-signed certificate kube-apiserver wrote into its cert-dir.
func (c *Cluster) connect() error {
	ca, err := os.ReadFile(c.addr.caFile)
	if err != nil {
		return fmt.Errorf("reading kube-apiserver's certificate: %w", err)
	}
	c.Config = &rest.Config{
		Host:            c.apiserverURL(),
		BearerToken:     c.addr.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             -1,
		UserAgent:       "lastcall-test-cluster",
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("making the admin client: %w", err)
	}
	return writeKubeconfig(c.Kubeconfig, c.apiserverURL(), ca, c.addr.token)
}

// startControllers starts kube-controller-manager, kube-scheduler and kwok
// together, then waits for the default ServiceAccount (made by the
// controller-manager) and for kwok's health endpoint, which kwok serves once
// its controllers run.
func (c *Cluster) startControllers(ctx context.Context) error {
	for _, s := range []struct {
		name, bin string
		args      []string
	}{
		{ControllerManager, c.bins.controllerManager, c.controllerManagerArgs()},
		{Scheduler, c.bins.scheduler, c.schedulerArgs()},
		{Kwok, c.bins.kwok, c.kwokArgs()},
	} {
		if _, err := c.startProcess(s.name, s.bin, s.args); err != nil {
			return fmt.Errorf("starting %s: %w", s.name, err)
		}
	}
	ctx, cancel := whileRunning(ctx, c.processes()...)
	defer cancel()
	if err := c.waitServiceAccount(ctx, "default"); err != nil {
		return blame(err, c.process(ControllerManager))
	}
	url := "http://" + hostPort(c.addr.kwokPort) + "/healthz"
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	err := poll(ctx, func(ctx context.Context) error {
		return checkHTTP(ctx, hc, url, "", "ok")
	})
	if err != nil {
		return blame(fmt.Errorf("waiting for %s: %w", url, err), c.process(Kwok))
	}
	if s := c.process(Scheduler); !s.running() {
		return componentError(s, s.exitError())
	}
	return nil
}

// processes returns the processes started so far.
func (c *Cluster) processes() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*process(nil), c.procs...)
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port,
// with the same certificate and etcd, and waits until /readyz answers ok
// through Client. The other components reconnect by themselves.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	old := c.process(APIServer)
	if old == nil {
		return errors.New("restarting kube-apiserver: not started")
	}
	old.stop()
	p, err := c.startProcess(APIServer, c.bins.apiserver, c.apiserverArgs())
	if err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	ctx, cancelTimeout := c.withWaitTimeout(ctx)
	defer cancelTimeout()
	ctx, cancel := whileRunning(ctx, c.process(Etcd), p)
	defer cancel()
	err = poll(ctx, func(ctx context.Context) error {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(body)) != "ok" {
			return fmt.Errorf("/readyz answered %q", body)
		}
		return nil
	})
	if err != nil {
		err = blame(fmt.Errorf("waiting for /readyz: %w", err), p)
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	return nil
}

// checkHTTP GETs url (with a bearer token if not empty) and succeeds if it
// answers 200 with a body containing want.
func checkHTTP(ctx context.Context, hc *http.Client, url, token, want string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// poll calls check every pollInterval until it succeeds or ctx ends. The
// error then holds ctx's cause and check's last error.
func poll(ctx context.Context, check func(context.Context) error) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err)
		case <-ticker.C:
		}
	}
}

// whileRunning returns a context that is also cancelled, with an *exitError
// as cause, when one of procs exits.
func whileRunning(ctx context.Context, procs ...*process) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	for _, p := range procs {
		if p == nil {
			continue
		}
		go func() {
			select {
			case <-p.exited:
				cancel(p.exitError())
			case <-ctx.Done():
			}
		}()
	}
	return ctx, func() { cancel(context.Canceled) }
}

// blame wraps err with the log of the process that exited, if one did, or of
// suspect otherwise.
func blame(err error, suspect *process) error {
	var exited *exitError
	if errors.As(err, &exited) {
		return componentError(exited.p, err)
	}
	return componentError(suspect, err)
}
