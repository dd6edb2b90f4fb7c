// Package apiproxy is a counting reverse proxy for kube-apiserver: a
// client is given a kubeconfig pointing at the proxy (plain HTTP on
// 127.0.0.1, no credentials), and the proxy forwards each request to the
// API server with the credentials and CA of a rest.Config, counting per
// verb and resource the requests made, those still open, and the response
// bytes received, as they came and decompressed. The benchmarks use it to
// see what an agent reads from the API server.
package apiproxy

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Key is what a request is counted under: its verb and resource, named as
// the API server's authorizer names them.
type Key struct {
	// Verb is get, list, watch, create, update, patch, delete or
	// deletecollection for a resource; for any other path, the method in
	// lower case.
	Verb string
	// Group is the API group ("" for the core group).
	Group string
	// Resource is the resource, with its subresource after a slash
	// (pods/eviction); for any other path (/version, /apis), the path.
	Resource string
	// Namespaced says the request named a namespace: it reads or writes
	// within one namespace, not across the cluster.
	Namespaced bool
}

// String is the verb and the resource, the group after a dot as kubectl
// writes it (list poddisruptionbudgets.policy), and "in a namespace" when
// the request named one.
func (k Key) String() string {
	return k.Verb + " " + k.ResourceName()
}

// ResourceName is the resource, the group after a dot, and "in a
// namespace" when the request named one.
func (k Key) ResourceName() string {
	s := k.Resource
	if k.Group != "" {
		s += "." + k.Group
	}
	if k.Namespaced {
		s += " in a namespace"
	}
	return s
}

// Count is what was counted under one Key.
type Count struct {
	// Requests is how many requests were made.
	Requests int64
	// Open is how many are in progress (for watches: open).
	Open int64
	// Bytes is how many response body bytes came from the API server, as
	// they came (compressed when the API server compressed them).
	Bytes int64
	// Decoded is how many bytes those were once decompressed: what the
	// client decodes. The API server gzips a response of over 128 KiB to
	// a client that accepts it (client-go does), so a large LIST is a
	// tenth or less of its size on the wire. A response in another
	// encoding counts as it came.
	Decoded int64
	// Gzipped is how many responses came gzip-compressed.
	Gzipped int64
	// Failed is how many responses had a status of 400 or more, or did not
	// come at all.
	Failed int64
}

func (c Count) add(d Count) Count {
	return Count{c.Requests + d.Requests, c.Open + d.Open, c.Bytes + d.Bytes, c.Decoded + d.Decoded, c.Gzipped + d.Gzipped, c.Failed + d.Failed}
}

// Counts is a snapshot of what the proxy counted.
type Counts map[Key]Count

// Verb sums the counts of every request with that verb.
func (cs Counts) Verb(verb string) Count {
	var sum Count
	for k, c := range cs {
		if k.Verb == verb {
			sum = sum.add(c)
		}
	}
	return sum
}

// Total sums every count.
func (cs Counts) Total() Count {
	var sum Count
	for _, c := range cs {
		sum = sum.add(c)
	}
	return sum
}

// Since is what was counted after earlier, a snapshot of the same proxy:
// Open is as now, the others are differences.
// Keys with nothing new are left out.
func (cs Counts) Since(earlier Counts) Counts {
	out := Counts{}
	for k, c := range cs {
		e := earlier[k]
		d := Count{c.Requests - e.Requests, c.Open, c.Bytes - e.Bytes, c.Decoded - e.Decoded, c.Gzipped - e.Gzipped, c.Failed - e.Failed}
		if d != (Count{Open: c.Open}) {
			out[k] = d
		}
	}
	return out
}

// Keys are the keys in order: by verb, then resource.
func (cs Counts) Keys() []Key {
	return slices.SortedFunc(maps.Keys(cs), func(a, b Key) int {
		return strings.Compare(a.Verb+"\x00"+a.ResourceName(), b.Verb+"\x00"+b.ResourceName())
	})
}

// String lists the counts, one key a line.
func (cs Counts) String() string {
	var sb strings.Builder
	for _, k := range cs.Keys() {
		c := cs[k]
		fmt.Fprintf(&sb, "%s: %d requests (%d open, %d failed), %d bytes, %d decoded (%d responses gzipped)\n",
			k, c.Requests, c.Open, c.Failed, c.Bytes, c.Decoded, c.Gzipped)
	}
	return sb.String()
}

// counter is the live count of one Key.
type counter struct {
	requests, open, bytes, decoded, gzipped, failed atomic.Int64
}

func (c *counter) load() Count {
	return Count{c.requests.Load(), c.open.Load(), c.bytes.Load(), c.decoded.Load(), c.gzipped.Load(), c.failed.Load()}
}

// Proxy is a running counting proxy.
type Proxy struct {
	srv *http.Server
	ln  net.Listener
	rp  *httputil.ReverseProxy

	mu       sync.Mutex
	counters map[Key]*counter
	last     time.Time // when the last request came
	served   sync.WaitGroup
}

// ctxKey carries a request's counter from ServeHTTP to the response.
type ctxKey struct{}

// Start serves a proxy to the API server of upstream on a free port of
// 127.0.0.1, in plain HTTP. Requests go on with upstream's credentials
// and trust (rest.TransportFor), whatever the client sent; upstream's
// rate limits are not applied.
func Start(upstream *rest.Config) (*Proxy, error) {
	target, err := url.Parse(upstream.Host)
	if err != nil {
		return nil, fmt.Errorf("the API server's address %q: %w", upstream.Host, err)
	}
	if target.Scheme == "" || target.Host == "" {
		return nil, fmt.Errorf("the API server's address %q is not an absolute URL", upstream.Host)
	}
	transport, err := rest.TransportFor(upstream)
	if err != nil {
		return nil, fmt.Errorf("the API server's transport: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, counters: map[Key]*counter{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Del("Authorization") // the transport's credentials only
		},
		Transport:      transport,
		FlushInterval:  -1, // watch events reach the client as they come
		ModifyResponse: p.countResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			if c, ok := r.Context().Value(ctxKey{}).(*counter); ok {
				c.failed.Add(1)
			}
			http.Error(w, "apiproxy: "+err.Error(), http.StatusBadGateway)
		},
		// Watches the client or Close ends are not worth a log line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	p.served.Go(func() { _ = p.srv.Serve(ln) })
	return p, nil
}

// URL is the proxy's base URL (http://127.0.0.1:port).
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy at once, ending the requests in progress (open
// watches included).
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.served.Wait()
	return err
}

// WriteKubeconfig writes a kubeconfig at path for a client of the proxy:
// its URL, no credentials.
func (p *Proxy) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["apiproxy"] = &clientcmdapi.Cluster{Server: p.URL()}
	cfg.AuthInfos["apiproxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["apiproxy"] = &clientcmdapi.Context{Cluster: "apiproxy", AuthInfo: "apiproxy"}
	cfg.CurrentContext = "apiproxy"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing the proxy's kubeconfig: %w", err)
	}
	return nil
}

// Counts is a snapshot of the counts so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(Counts, len(p.counters))
	for k, c := range p.counters {
		out[k] = c.load()
	}
	return out
}

// LastRequest is when the last request came (zero before any).
func (p *Proxy) LastRequest() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// ServeHTTP counts the request and forwards it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := Classify(r.Method, r.URL)
	p.mu.Lock()
	c := p.counters[k]
	if c == nil {
		c = &counter{}
		p.counters[k] = c
	}
	p.last = time.Now()
	c.requests.Add(1) // under mu: a snapshot sees the request with LastRequest
	p.mu.Unlock()
	c.open.Add(1)
	defer c.open.Add(-1)
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
}

// countResponse counts the response's status and makes its body count the
// bytes read from it.
func (p *Proxy) countResponse(resp *http.Response) error {
	c, ok := resp.Request.Context().Value(ctxKey{}).(*counter)
	if !ok {
		return nil
	}
	if resp.StatusCode >= 400 {
		c.failed.Add(1)
	}
	gzipped := strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip")
	if gzipped {
		c.gzipped.Add(1)
	}
	resp.Body = newCountingBody(resp.Body, c, gzipped)
	return nil
}

// countingBody counts what is read from it before returning it, so that
// a client that has received some bytes finds them counted. A gzipped
// body is also decompressed, on the side, to count its decoded bytes.
type countingBody struct {
	io.ReadCloser
	c *counter
	// For a gzipped body: what is read is written to unzip, which a
	// goroutine decompresses; unzipped is closed once it has finished.
	unzip    *io.PipeWriter
	unzipped chan struct{}
	finish   sync.Once
}

func newCountingBody(body io.ReadCloser, c *counter, gzipped bool) *countingBody {
	b := &countingBody{ReadCloser: body, c: c}
	if !gzipped {
		return b
	}
	r, w := io.Pipe()
	b.unzip, b.unzipped = w, make(chan struct{})
	go func() {
		defer close(b.unzipped)
		defer r.Close() // a write after a bad stream fails rather than blocks
		zr, err := gzip.NewReader(r)
		if err != nil {
			return
		}
		_, _ = io.Copy(addTo{&c.decoded}, zr)
	}()
	return b
}

func (b *countingBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.c.bytes.Add(int64(n))
	if b.unzip == nil {
		b.c.decoded.Add(int64(n))
		return n, err
	}
	if n > 0 {
		_, _ = b.unzip.Write(buf[:n])
	}
	if err != nil {
		b.done() // the decoded count is whole before the end is passed on
	}
	return n, err
}

func (b *countingBody) Close() error {
	if b.unzip != nil {
		b.done()
	}
	return b.ReadCloser.Close()
}

// done ends the decompression and waits for it.
func (b *countingBody) done() {
	b.finish.Do(func() {
		b.unzip.Close()
		<-b.unzipped
	})
}

// addTo is a writer that only counts.
type addTo struct{ n *atomic.Int64 }

func (a addTo) Write(p []byte) (int, error) {
	a.n.Add(int64(len(p)))
	return len(p), nil
}

// Classify names a request as the API server's request info does: the
// resource, its group and subresource, whether a namespace is named, and
// the verb, a GET of a collection being a watch when the watch parameter
// is set (or the path starts with /watch/).
func Classify(method string, u *url.URL) Key {
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:] // api, v1
	case len(parts) >= 3 && parts[0] == "apis":
		group, parts = parts[1], parts[3:] // apis, group, version
	default:
		return Key{Verb: strings.ToLower(method), Resource: u.Path}
	}
	watchPath := len(parts) > 0 && parts[0] == "watch"
	if watchPath {
		parts = parts[1:]
	}
	if len(parts) == 0 {
		return Key{Verb: strings.ToLower(method), Resource: u.Path}
	}
	k := Key{Group: group}
	// namespaces/<ns>/<resource>/...: a namespaced resource, unless what
	// follows is the namespace's own subresource (status, finalize).
	if parts[0] == "namespaces" && len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
		k.Namespaced = true
		parts = parts[2:]
	}
	k.Resource = parts[0]
	named := len(parts) > 1
	if len(parts) > 2 {
		k.Resource += "/" + parts[2]
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		switch {
		case watchPath || isWatch(u.Query()["watch"]):
			k.Verb = "watch"
		case named:
			k.Verb = "get"
		default:
			k.Verb = "list"
		}
	case http.MethodPost:
		k.Verb = "create"
	case http.MethodPut:
		k.Verb = "update"
	case http.MethodPatch:
		k.Verb = "patch"
	case http.MethodDelete:
		k.Verb = "delete"
		if !named {
			k.Verb = "deletecollection"
		}
	default:
		k.Verb = strings.ToLower(method)
	}
	return k
}

// isWatch reads the watch parameter as the API server does: set, and not
// false or 0.
func isWatch(values []string) bool {
	if len(values) == 0 {
		return false
	}
	switch strings.ToLower(values[0]) {
	case "false", "0":
		return false
	}
	return true
}
