package e2e

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lastcall/lastcall/test/agentproc"
)

// kubeconfigVia writes a copy of the cluster's kubeconfig whose server is
// addr, and returns its path.
func kubeconfigVia(t *testing.T, addr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = addr
		c.Server = u.String()
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// The API server stops answering on the agent's connections without
// closing them. A preemption notice then comes: the agent's call to hold
// the node must not hang on the dead connection; it gives up, drops its
// connections and holds the node on a new one, well inside GCE's 30 s.
func TestHalfOpenAPIConnectionDoesNotStopHolds(t *testing.T) {
	name := newNode(t, "halfopen", nil)
	g := startGCE(t)
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := forward(t, "127.0.0.1", u.Host)
	closed := closedURL(t)
	a, err := agentproc.Start(context.Background(), agentproc.Config{Binary: buildLastcall(t), Node: name,
		Kubeconfig: kubeconfigVia(t, proxy.addr), IMDS: closed, LogPath: filepath.Join(t.TempDir(), "lastcall.log"),
		Env: []string{"LASTCALL_CLOUD=gce", "GCE_METADATA_HOST=" + g.Host()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	waitProcessSourceUp(t, a, "gce-preempted")

	proxy.stall()
	at := time.Now()
	g.Set("instance/preempted", "TRUE")
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	took := time.Since(at)
	if took > 20*time.Second {
		t.Errorf("cordoned %s after the notice: a call hung on the half-open connection", took.Round(time.Second))
	}
	t.Logf("cordoned %s after the notice", took.Round(100*time.Millisecond))
	scraped := &agent{url: "http://" + a.Addr}
	if n := scraped.metric(t, "lastcall_kube_connections_dropped_total", nil); n < 1 {
		t.Errorf("lastcall_kube_connections_dropped_total %v, want the drop counted", n)
	}
}
