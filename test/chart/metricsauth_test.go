package chart_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestMetricsAuth renders the chart with metrics.auth, applies its RBAC,
// and runs lastcall (the drainability process) as its ServiceAccount with
// the flag the chart passes. Over HTTPS, /metrics answers 401 to no token,
// 403 to a ServiceAccount the API server authenticates but that may not
// get /metrics, and the metrics to one bound to the chart's metrics-reader
// ClusterRole; the probes answer anyone. The outcomes are counted.
func TestMetricsAuth(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(t, "lastcall-metrics-auth")
	const release = "mauth"
	values := map[string]any{"metrics": map[string]any{"auth": map[string]any{"enabled": true}}}
	var reader string
	for _, o := range render(t, release, ns, values) {
		if o.GetKind() == "ClusterRole" && strings.HasSuffix(o.GetName(), "-metrics-reader") {
			reader = o.GetName()
		}
		if o.GetKind() == "Deployment" && !strings.Contains(fmt.Sprint(o.Object), "--metrics-auth=kubernetes") {
			t.Errorf("Deployment %s is not passed --metrics-auth=kubernetes", o.GetName())
		}
	}
	if reader == "" {
		t.Fatal("metrics.auth rendered no metrics-reader ClusterRole")
	}
	clients := installRBAC(t, release, ns, values)

	for _, sa := range []string{"scraper", "stranger"} {
		if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-scraper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: reader},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "scraper", Namespace: ns}},
	}
	if _, err := env.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	token := func(sa string) string {
		tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, tokenRequest(), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	scraper, stranger := token("scraper"), token("stranger")

	ln := runDrainability(t, clients["drainability"], "lastcall under --metrics-auth=kubernetes", "--metrics-auth=kubernetes")

	// lastcall's certificate is its own, self-signed: a scraper of pods
	// skips verification, as with kube-rbac-proxy.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+ln.Addr().String()+path, nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		code, body, err := get("/readyz", "")
		last = fmt.Sprint(code, " ", body, " ", err)
		return code == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("/readyz over HTTPS without a token never answered 200: %v (last: %s)", err, last)
	}
	for _, tc := range []struct {
		who, token string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token the API server rejects", "not-a-token", http.StatusUnauthorized},
		{"a ServiceAccount that may not get /metrics", stranger, http.StatusForbidden},
		{"a ServiceAccount bound to " + reader, scraper, http.StatusOK},
	} {
		code, body, err := get("/metrics", tc.token)
		if err != nil || code != tc.want {
			t.Errorf("/metrics for %s: %d %q (%v), want %d", tc.who, code, body, err, tc.want)
		}
		if code == http.StatusOK && !strings.Contains(body, "lastcall_build_info") {
			t.Errorf("/metrics for %s answered 200 without lastcall's metrics", tc.who)
		}
		if code != http.StatusOK && strings.Contains(body, "lastcall_") {
			t.Errorf("/metrics for %s leaked metrics: %q", tc.who, body)
		}
	}
	if code, body, err := get("/healthz", ""); err != nil || code != http.StatusOK {
		t.Errorf("/healthz without a token: %d %q (%v), want 200", code, body, err)
	}
	_, body, err := get("/metrics", scraper)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`lastcall_metrics_requests_total{outcome="unauthenticated"} 2`,
		`lastcall_metrics_requests_total{outcome="forbidden"} 1`,
		`lastcall_metrics_requests_total{outcome="allowed"} 2`, // this scrape counts itself
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestMetricsBindPodIP: with metrics.bindPodIP every component listens on
// the address the kubelet makes of the pod's IP, an IPv4 or an IPv6 one,
// which net.Listen takes.
func TestMetricsBindPodIP(t *testing.T) {
	objs := render(t, "bind", "bind", map[string]any{"metrics": map[string]any{"bindPodIP": true}})
	workloads := 0
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" && o.GetKind() != "Deployment" {
			continue
		}
		workloads++
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		c, _ := containers[0].(map[string]any)
		args, _, _ := unstructured.NestedStringSlice(c, "args")
		env, _, _ := unstructured.NestedSlice(c, "env")
		fromPodIP := false
		for _, e := range env {
			e, _ := e.(map[string]any)
			path, _, _ := unstructured.NestedString(e, "valueFrom", "fieldRef", "fieldPath")
			fromPodIP = fromPodIP || (e["name"] == "POD_IP" && path == "status.podIP")
		}
		if !fromPodIP {
			t.Errorf("%s %s: no POD_IP from status.podIP", o.GetKind(), o.GetName())
		}
		var listen string
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--listen-address="); ok {
				listen = v
			}
		}
		for _, ip := range []string{"127.0.0.1", "::1"} {
			addr := strings.ReplaceAll(strings.Replace(listen, ":9477", ":0", 1), "$(POD_IP)", ip)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("%s %s: --listen-address=%s with the pod IP %s: %v", o.GetKind(), o.GetName(), listen, ip, err)
				continue
			}
			if host, _, _ := net.SplitHostPort(ln.Addr().String()); host != ip {
				t.Errorf("%s %s: --listen-address=%s listens on %s, want %s only", o.GetKind(), o.GetName(), listen, ln.Addr(), ip)
			}
			ln.Close()
		}
	}
	if workloads != 2 {
		t.Errorf("rendered %d workloads, want the DaemonSet and the drainability Deployment", workloads)
	}
}
