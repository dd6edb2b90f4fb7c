// Package kubeconn bounds each Kubernetes API call lastcall makes, and
// drops every connection to the API server when one goes unanswered.
//
// A connection can stop passing bytes without closing: a NAT or conntrack
// entry forgotten, a load balancer in front of the API server replaced, a
// peer that vanished. HTTP/2 multiplexes every request on one connection,
// so each later call waits on it too, until Go's HTTP/2 health check gives
// up on it (about 45 s: 30 s without a frame, then 15 s for a ping). That is
// longer than a GCE preemption notice. The kubelet has the same problem
// and the same cure: close all its connections when a call fails that way.
package kubeconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/connrotation"
)

// errTimeout is the cause of a call's context when its own bound passed.
var errTimeout = errors.New("kubeconn: call timeout")

// dropped counts the drops of every Bound configuration of the process.
var dropped = prometheus.NewCounter(prometheus.CounterOpts{
	Namespace: "lastcall", Name: "kube_connections_dropped_total",
	Help: "Times every connection to the Kubernetes API server was closed because a call went unanswered for --kube-api-timeout.",
})

// Register adds the count of drops to reg.
func Register(reg prometheus.Registerer) error {
	if err := reg.Register(dropped); err != nil {
		if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
			return err
		}
	}
	return nil
}

// Bound configures cfg so that every Kubernetes API call but watches and
// lists must be answered within timeout, and when one is not, every
// connection to the API server is closed: the call fails (its caller tries
// again, on a new connection), and so does every call and watch waiting on
// the dead connection. lastcall_kube_connections_dropped_total counts it.
//
// Watches wait by design, and a list of a large cluster may take long to
// arrive: they keep HTTP/2's health check, and informers re-list and
// re-watch on their own.
func Bound(cfg *rest.Config, timeout time.Duration, log *slog.Logger) {
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	d := connrotation.NewDialer(connrotation.DialFunc(dial))
	cfg.Dial = d.DialContext
	drop := func(req *http.Request) {
		dropped.Inc()
		log.Warn("a Kubernetes API call went unanswered: closing every connection to the API server, calls continue on new ones",
			"method", req.Method, "path", req.URL.Path, "timeout", timeout)
		d.CloseAll()
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &bounded{next: rt, timeout: timeout, drop: drop} })
}

type bounded struct {
	next    http.RoundTripper
	timeout time.Duration
	drop    func(*http.Request)
}

func (b *bounded) RoundTrip(req *http.Request) (*http.Response, error) {
	if !Bounded(req) {
		return b.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), b.timeout, errTimeout)
	resp, err := b.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		if context.Cause(ctx) == errTimeout {
			b.drop(req)
			return nil, fmt.Errorf("no answer within %s (--kube-api-timeout): %w", b.timeout, err)
		}
		return nil, err
	}
	resp.Body = &body{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, drop: func() { b.drop(req) }}
	return resp, nil
}

// body is a response read under its call's bound: a body that stops
// arriving is a dead connection too.
type body struct {
	io.ReadCloser
	ctx     context.Context
	cancel  context.CancelFunc
	drop    func()
	dropped bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !b.dropped && context.Cause(b.ctx) == errTimeout {
		b.dropped = true
		b.drop()
	}
	return n, err
}

func (b *body) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// Bounded says whether req is bounded: every request but a watch, or a
// list (a GET of a collection).
func Bounded(req *http.Request) bool {
	if req.URL.Query().Get("watch") == "true" {
		return false
	}
	return req.Method != http.MethodGet || named(req.URL.Path)
}

// named says whether an API path names one object (or its subresource),
// rather than a collection: /api/v1/nodes/x, /api/v1/namespaces/ns/pods/x,
// /apis/group/version/namespaces/ns/kind/x. Paths outside the API (such as
// /version) count as named: they are small.
func named(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return true
	}
	if len(parts) > 2 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	return len(parts) >= 2
}
