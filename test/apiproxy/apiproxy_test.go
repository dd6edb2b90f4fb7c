package apiproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		want        Key
	}{
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=500", Key{Verb: "list", Resource: "pods"}},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true&sendInitialEvents=true", Key{Verb: "watch", Resource: "pods"}},
		{"GET", "/api/v1/pods?watch=1", Key{Verb: "watch", Resource: "pods"}},
		{"GET", "/api/v1/pods?watch=false", Key{Verb: "list", Resource: "pods"}},
		{"GET", "/api/v1/pods?watch=0", Key{Verb: "list", Resource: "pods"}},
		{"GET", "/api/v1/watch/nodes/n1", Key{Verb: "watch", Resource: "nodes"}},
		{"GET", "/api/v1/watch/namespaces/a/services", Key{Verb: "watch", Resource: "services", Namespaced: true}},
		{"GET", "/api/v1/nodes/n1", Key{Verb: "get", Resource: "nodes"}},
		{"GET", "/apis/policy/v1/poddisruptionbudgets?resourceVersion=0", Key{Verb: "list", Group: "policy", Resource: "poddisruptionbudgets"}},
		{"GET", "/apis/policy/v1/namespaces/a/poddisruptionbudgets", Key{Verb: "list", Group: "policy", Resource: "poddisruptionbudgets", Namespaced: true}},
		{"GET", "/apis/policy/v1/namespaces/a/poddisruptionbudgets/b", Key{Verb: "get", Group: "policy", Resource: "poddisruptionbudgets", Namespaced: true}},
		{"POST", "/api/v1/namespaces/a/pods/p/eviction", Key{Verb: "create", Resource: "pods/eviction", Namespaced: true}},
		{"PATCH", "/api/v1/nodes/n1", Key{Verb: "patch", Resource: "nodes"}},
		{"PATCH", "/api/v1/nodes/n1/status", Key{Verb: "patch", Resource: "nodes/status"}},
		{"PUT", "/api/v1/namespaces/a/configmaps/c", Key{Verb: "update", Resource: "configmaps", Namespaced: true}},
		{"DELETE", "/api/v1/namespaces/a/pods/p", Key{Verb: "delete", Resource: "pods", Namespaced: true}},
		{"DELETE", "/api/v1/namespaces/a/pods", Key{Verb: "deletecollection", Resource: "pods", Namespaced: true}},
		{"POST", "/api/v1/namespaces/a/events", Key{Verb: "create", Resource: "events", Namespaced: true}},
		{"GET", "/api/v1/namespaces", Key{Verb: "list", Resource: "namespaces"}},
		{"GET", "/api/v1/namespaces/a", Key{Verb: "get", Resource: "namespaces"}},
		{"PUT", "/api/v1/namespaces/a/finalize", Key{Verb: "update", Resource: "namespaces/finalize"}},
		{"GET", "/api/v1/namespaces/a/status", Key{Verb: "get", Resource: "namespaces/status"}},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", Key{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Namespaced: true}},
		{"GET", "/version", Key{Verb: "get", Resource: "/version"}},
		{"GET", "/api", Key{Verb: "get", Resource: "/api"}},
		{"GET", "/api/v1", Key{Verb: "get", Resource: "/api/v1"}},
		{"GET", "/apis/policy/v1", Key{Verb: "get", Resource: "/apis/policy/v1"}},
		{"GET", "/", Key{Verb: "get", Resource: "/"}},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := Classify(tc.method, u); got != tc.want {
			t.Errorf("Classify(%s %s) = %+v, want %+v", tc.method, tc.url, got, tc.want)
		}
	}
}

func TestKeyString(t *testing.T) {
	for _, tc := range []struct {
		k    Key
		want string
	}{
		{Key{Verb: "watch", Resource: "pods"}, "watch pods"},
		{Key{Verb: "list", Group: "policy", Resource: "poddisruptionbudgets"}, "list poddisruptionbudgets.policy"},
		{Key{Verb: "get", Resource: "services", Namespaced: true}, "get services in a namespace"},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.k, got, tc.want)
		}
	}
}

// upstream is a TLS server standing for the API server: it refuses any
// request without the bearer token, and answers with handler.
func upstream(t *testing.T, handler http.HandlerFunc) (*rest.Config, *httptest.Server) {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer secret" {
			http.Error(w, "bad credentials: "+got, http.StatusUnauthorized)
			return
		}
		handler(w, r)
	}))
	t.Cleanup(ts.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	return &rest.Config{Host: ts.URL, BearerToken: "secret", TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, ts
}

func startProxy(t *testing.T, cfg *rest.Config) *Proxy {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// get makes a request through the proxy and returns the status and body.
func get(t *testing.T, method, url string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestCountsRequestsAndBytes(t *testing.T) {
	pods := strings.Repeat("p", 1000)
	budgets := strings.Repeat("b", 2500)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(strings.Repeat("s", 10000)))
	zw.Close()
	cfg, _ := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/pods":
			io.WriteString(w, pods)
		case "/apis/policy/v1/poddisruptionbudgets":
			io.WriteString(w, budgets)
		case "/api/v1/services":
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
		case "/api/v1/nodes/n1":
			http.Error(w, "forbidden", http.StatusForbidden)
		case "/version":
			io.WriteString(w, `{"major":"1","minor":"36","gitVersion":"v1.36.3"}`)
		default:
			http.NotFound(w, r)
		}
	})
	p := startProxy(t, cfg)

	// A client made from the proxy's kubeconfig reaches the API server
	// with the proxy's credentials.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := p.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	clientCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.36.3" {
		t.Fatalf("version through the proxy: %+v", v)
	}

	for range 2 {
		if code, b := get(t, "GET", p.URL()+"/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", nil); code != 200 || string(b) != pods {
			t.Fatalf("pods: %d %d bytes", code, len(b))
		}
	}
	// A client's own credentials are not passed on.
	if code, b := get(t, "GET", p.URL()+"/apis/policy/v1/poddisruptionbudgets", http.Header{"Authorization": {"Bearer wrong"}}); code != 200 || string(b) != budgets {
		t.Fatalf("budgets: %d %q", code, b)
	}
	// Bytes are counted as they come: compressed.
	if code, b := get(t, "GET", p.URL()+"/api/v1/services", http.Header{"Accept-Encoding": {"gzip"}}); code != 200 || !bytes.Equal(b, gz.Bytes()) {
		t.Fatalf("services: %d, %d bytes, want %d", code, len(b), gz.Len())
	}
	code, forbidden := get(t, "GET", p.URL()+"/api/v1/nodes/n1", nil)
	if code != http.StatusForbidden {
		t.Fatalf("node: %d", code)
	}

	waitQuiet(t, p) // a handler may return just after its client has the whole response
	got := p.Counts()
	version := int64(len(`{"major":"1","minor":"36","gitVersion":"v1.36.3"}`))
	want := Counts{
		{Verb: "get", Resource: "/version"}:                               {Requests: 1, Bytes: version, Decoded: version},
		{Verb: "list", Resource: "pods"}:                                  {Requests: 2, Bytes: 2000, Decoded: 2000},
		{Verb: "list", Group: "policy", Resource: "poddisruptionbudgets"}: {Requests: 1, Bytes: 2500, Decoded: 2500},
		{Verb: "list", Resource: "services"}:                              {Requests: 1, Bytes: int64(gz.Len()), Decoded: 10000, Gzipped: 1},
		{Verb: "get", Resource: "nodes"}:                                  {Requests: 1, Bytes: int64(len(forbidden)), Decoded: int64(len(forbidden)), Failed: 1},
	}
	if got.String() != want.String() {
		t.Errorf("counts:\n%s\nwant:\n%s", got, want)
	}
	if list := got.Verb("list"); list != (Count{Requests: 4, Bytes: int64(4500 + gz.Len()), Decoded: 14500, Gzipped: 1}) {
		t.Errorf("lists: %+v", list)
	}
	if total := got.Total(); total.Requests != 6 {
		t.Errorf("total: %+v", total)
	}

	// Since leaves out what did not change.
	before := p.Counts()
	get(t, "GET", p.URL()+"/api/v1/pods", nil)
	waitQuiet(t, p)
	since := p.Counts().Since(before)
	if want := (Counts{{Verb: "list", Resource: "pods"}: {Requests: 1, Bytes: 1000, Decoded: 1000}}); since.String() != want.String() {
		t.Errorf("since:\n%s\nwant:\n%s", since, want)
	}
}

func TestCountsWatchesAsTheyStream(t *testing.T) {
	events := []string{`{"type":"ADDED"}` + "\n", `{"type":"MODIFIED","object":{}}` + "\n", `{"type":"BOOKMARK"}` + "\n"}
	more := make(chan string)
	cfg, _ := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "true" {
			http.Error(w, "not a watch", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case e, ok := <-more:
				if !ok {
					return // the API server ends the watch
				}
				io.WriteString(w, e)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	p := startProxy(t, cfg)
	key := Key{Verb: "watch", Group: "policy", Resource: "poddisruptionbudgets"}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", p.URL()+"/apis/policy/v1/poddisruptionbudgets?watch=true&sendInitialEvents=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %s", resp.Status)
	}
	var received int64
	for i, e := range events {
		more <- e
		buf := make([]byte, len(e))
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		received += int64(len(buf))
		// What the client has is counted, while the watch is open.
		if got, want := p.Counts()[key], (Count{Requests: 1, Open: 1, Bytes: received, Decoded: received}); got != want {
			t.Fatalf("after event %d: %+v, want %+v", i, got, want)
		}
	}
	close(more)
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after the watch ended: %q, %v", rest, err)
	}
	// Open drops when the proxy's handler returns.
	waitOpen(t, p, key, 0)
	if got, want := p.Counts()[key], (Count{Requests: 1, Bytes: received, Decoded: received}); got != want {
		t.Errorf("after the end: %+v, want %+v", got, want)
	}
}

func TestWatchEndedByTheClient(t *testing.T) {
	cfg, _ := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	p := startProxy(t, cfg)
	key := Key{Verb: "watch", Resource: "nodes"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL()+"/api/v1/watch/nodes", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got := p.Counts()[key]; got != (Count{Requests: 1, Open: 1, Bytes: 1, Decoded: 1}) {
		t.Fatalf("open: %+v", got)
	}
	resp.Body.Close()
	cancel()
	waitOpen(t, p, key, 0)
	if got := p.Counts()[key]; got != (Count{Requests: 1, Bytes: 1, Decoded: 1}) {
		t.Errorf("after the client left: %+v (a watch the client ends is no failure)", got)
	}
}

// A gzipped response read whole counts its decompressed size; one the
// client leaves half-read, or that is not gzip at all, counts what came and
// holds nothing up.
func TestGzipCutShortOrBroken(t *testing.T) {
	// Random, so incompressible: it spans several reads.
	data := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{1}).Read(data)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(data)
	zw.Close()
	cfg, _ := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		if r.URL.Path == "/api/v1/secrets" {
			io.WriteString(w, "not gzip at all")
			return
		}
		w.Write(gz.Bytes())
	})
	p := startProxy(t, cfg)

	req, _ := http.NewRequest("GET", p.URL()+"/api/v1/configmaps", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if code, b := get(t, "GET", p.URL()+"/api/v1/events", http.Header{"Accept-Encoding": {"gzip"}}); code != 200 || !bytes.Equal(b, gz.Bytes()) {
		t.Fatalf("events: %d, %d bytes, want %d", code, len(b), gz.Len())
	}
	if code, b := get(t, "GET", p.URL()+"/api/v1/secrets", http.Header{"Accept-Encoding": {"gzip"}}); code != 200 || string(b) != "not gzip at all" {
		t.Fatalf("secrets: %d %q", code, b)
	}
	waitQuiet(t, p)
	cut := p.Counts()[Key{Verb: "list", Resource: "configmaps"}]
	if cut.Requests != 1 || cut.Gzipped != 1 || cut.Bytes < 100 || cut.Bytes > int64(gz.Len()) {
		t.Errorf("cut short: %+v (%d bytes in all)", cut, gz.Len())
	}
	if got, want := p.Counts()[Key{Verb: "list", Resource: "events"}], (Count{Requests: 1, Bytes: int64(gz.Len()), Decoded: int64(len(data)), Gzipped: 1}); got != want {
		t.Errorf("read whole: %+v, want %+v", got, want)
	}
	if got := p.Counts()[Key{Verb: "list", Resource: "secrets"}]; got != (Count{Requests: 1, Bytes: 15, Gzipped: 1}) {
		t.Errorf("not gzip: %+v", got)
	}
}

func TestUpstreamDown(t *testing.T) {
	cfg, ts := upstream(t, func(http.ResponseWriter, *http.Request) {})
	ts.Close()
	p := startProxy(t, cfg)
	if code, _ := get(t, "GET", p.URL()+"/api/v1/pods", nil); code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", code)
	}
	waitQuiet(t, p)
	if got := p.Counts()[Key{Verb: "list", Resource: "pods"}]; got != (Count{Requests: 1, Failed: 1}) {
		t.Errorf("counts: %+v", got)
	}
}

func TestLastRequest(t *testing.T) {
	cfg, _ := upstream(t, func(http.ResponseWriter, *http.Request) {})
	p := startProxy(t, cfg)
	if !p.LastRequest().IsZero() {
		t.Fatal("a last request before any")
	}
	before := time.Now()
	get(t, "GET", p.URL()+"/api/v1/pods", nil)
	if last := p.LastRequest(); last.Before(before) || last.After(time.Now()) {
		t.Errorf("last request at %v, made after %v", last, before)
	}
}

func TestStartRefusesARelativeHost(t *testing.T) {
	if _, err := Start(&rest.Config{Host: "127.0.0.1:6443"}); err == nil {
		t.Error("no error for a host without a scheme")
	}
}

// waitQuiet polls the proxy until no request is open.
func waitQuiet(t *testing.T, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Counts().Total().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("requests still open after 10 s:\n%s", p.Counts())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOpen polls the proxy until key has n requests open.
func waitOpen(t *testing.T, p *Proxy, key Key, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Counts()[key].Open != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d open after 10 s, want %d", key, p.Counts()[key].Open, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
