package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// nonLoopback returns an IPv4 address of this machine that is not a
// loopback one: Go's ProxyFromEnvironment never proxies loopback
// addresses, and the cloud's metadata address (169.254.169.254) is not one.
func nonLoopback(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address: a proxy is never used for loopback, so this test cannot show one is not used")
	return ""
}

// exposeOn forwards TCP connections to ip (a free port) to target
// (host:port), until the test ends, and returns the address it listens on.
func exposeOn(t *testing.T, ip, target string) string { return forward(t, ip, target).addr }

// With HTTP_PROXY and HTTPS_PROXY set to a port that refuses connections,
// the agent still detects its cloud and handles its notice: metadata is
// never asked through a proxy. The metadata services answer on an address
// that is not loopback, as 169.254.169.254 is not. The agent runs as a
// process of its own: Go reads the proxy variables once per process.
func TestMetadataNeverThroughProxies(t *testing.T) {
	ip := nonLoopback(t)
	closed := closedURL(t)
	proxies := []string{"HTTP_PROXY=" + closed, "HTTPS_PROXY=" + closed, "http_proxy=" + closed, "https_proxy=" + closed,
		"NO_PROXY=", "no_proxy=", "LASTCALL_CLOUD=auto", "LASTCALL_POLL_INTERVAL=100ms"}
	cordoned := func(n *corev1.Node) bool { return n.Spec.Unschedulable }
	start := func(t *testing.T, name, imds string, extra ...string) *agentproc.Agent {
		t.Helper()
		a, err := agentproc.Start(context.Background(), agentproc.Config{Binary: buildLastcall(t), Node: name, Kubeconfig: env.Kubeconfig,
			IMDS: imds, LogPath: filepath.Join(t.TempDir(), "lastcall.log"), Env: append(proxies, extra...)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Stop() })
		return a
	}

	t.Run("aws", func(t *testing.T) {
		name := newNode(t, "proxy-aws", nil)
		imds := spotNotice(t)
		start(t, name, "http://"+exposeOn(t, ip, strings.TrimPrefix(imds.URL(), "http://")),
			"LASTCALL_AZURE_ENDPOINT="+closed, "GCE_METADATA_HOST="+strings.TrimPrefix(closed, "http://"), "LASTCALL_IMDS_SIGNALS=spot")
		waitNode(t, name, cordoned)
	})
	t.Run("gce", func(t *testing.T) {
		name := newNode(t, "proxy-gce", nil)
		g := startGCE(t)
		a := start(t, name, closed, "LASTCALL_AZURE_ENDPOINT="+closed, "GCE_METADATA_HOST="+exposeOn(t, ip, g.Host()))
		waitProcessSourceUp(t, a, "gce-preempted")
		g.Set("instance/preempted", "TRUE")
		waitNode(t, name, cordoned)
	})
	t.Run("azure", func(t *testing.T) {
		name := newNode(t, "proxy-az", nil)
		az := startAzure(t)
		az.SetComputeName(name) // asked of instance metadata, not through the proxy either
		a := start(t, name, closed, "LASTCALL_AZURE_ENDPOINT=http://"+exposeOn(t, ip, strings.TrimPrefix(az.URL(), "http://")),
			"GCE_METADATA_HOST="+strings.TrimPrefix(closed, "http://"))
		waitProcessSourceUp(t, a, "azure-scheduled-events")
		az.SetEvents(azuremeta.Event{EventID: "proxy-" + name, EventType: "Preempt", ResourceType: "VirtualMachine",
			Resources: []string{name}, EventStatus: "Scheduled", NotBefore: time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)})
		waitNode(t, name, cordoned)
	})
}

// waitProcessSourceUp waits until the agent process reports the source
// read successfully.
func waitProcessSourceUp(t *testing.T, a *agentproc.Agent, source string) {
	t.Helper()
	want := fmt.Sprintf("lastcall_source_up{source=%q} 1", source)
	eventually(t, source+" up", func() bool {
		resp, err := http.Get("http://" + a.Addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), want)
	})
}
