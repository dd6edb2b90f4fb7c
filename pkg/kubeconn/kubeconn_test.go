package kubeconn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestBounded(t *testing.T) {
	for _, c := range []struct {
		method, url string
		want        bool
	}{
		{"GET", "/api/v1/nodes/n1", true},
		{"PATCH", "/api/v1/nodes/n1", true},
		{"GET", "/api/v1/nodes", false},
		{"GET", "/api/v1/nodes?watch=true&resourceVersion=5", false},
		{"GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1&watch=true", false},
		{"POST", "/api/v1/namespaces/ns/pods/p/eviction", true},
		{"GET", "/api/v1/namespaces/ns/pods", false},
		{"GET", "/api/v1/namespaces/ns/pods/p", true},
		{"GET", "/api/v1/namespaces/ns", true},
		{"GET", "/api/v1/namespaces", false},
		{"GET", "/apis/policy/v1/namespaces/ns/poddisruptionbudgets", false},
		{"GET", "/apis/policy/v1/poddisruptionbudgets", false},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", true},
		{"POST", "/apis/events.k8s.io/v1/namespaces/ns/events", true},
		{"DELETE", "/api/v1/namespaces/ns/pods/p", true},
		{"GET", "/version", true},
	} {
		req := httptest.NewRequest(c.method, c.url, nil)
		if got := Bounded(req); got != c.want {
			t.Errorf("%s %s: bounded %v, want %v", c.method, c.url, got, c.want)
		}
	}
}

// A call the API server never answers, on an HTTP/2 connection every call
// shares, fails at the bound and closes the connection: the next call
// goes on a new one and succeeds, where it would otherwise queue behind
// the dead connection until HTTP/2's health check gave up on it.
func TestUnansweredCallDropsConnections(t *testing.T) {
	release := make(chan struct{})
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stuck") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1","metadata":{"name":"ok"}}`))
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(func() { close(release); srv.Close() })

	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	before := drops(t)
	Bound(cfg, 200*time.Millisecond, slog.New(slog.DiscardHandler))
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CoreV1().Nodes().Get(ctx, "ok", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CoreV1().Nodes().Get(ctx, "stuck", metav1.GetOptions{})
	if err == nil || !strings.Contains(err.Error(), "--kube-api-timeout") {
		t.Fatalf("unanswered call returned %v, want the bound named", err)
	}
	if n := drops(t) - before; n != 1 {
		t.Errorf("drops counted %v, want 1", n)
	}
	if _, err := c.CoreV1().Nodes().Get(ctx, "ok", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections opened, want 2: the dead one closed, one new", n)
	}
}

// A call whose own caller gives up first is not the API server's fault:
// the connections stay.
func TestCallerCancelKeepsConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL}
	before := drops(t)
	Bound(cfg, time.Hour, slog.New(slog.DiscardHandler))
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.CoreV1().Nodes().Get(ctx, "n", metav1.GetOptions{})
	if err == nil || apierrors.IsNotFound(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
	if n := drops(t) - before; n != 0 {
		t.Errorf("drops counted %v, want 0", n)
	}
}

// drops is lastcall_kube_connections_dropped_total, as a registry gathers it.
func drops(t *testing.T) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "lastcall_kube_connections_dropped_total" {
		t.Fatalf("gather: %v, %v", err, mfs)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
