package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Outcomes of an authorization of a request for /metrics, the values of
// lastcall_metrics_requests_total's outcome label.
const (
	AuthAllowed         = "allowed"
	AuthUnauthenticated = "unauthenticated"
	AuthForbidden       = "forbidden"
	AuthError           = "error"
)

// MetricsPath is the non-resource URL a scraper must be allowed to get.
const MetricsPath = "/metrics"

// Auth lets through to /metrics only the requests whose bearer token the
// API server authenticates (a TokenReview) and whose user it allows to get
// the non-resource URL /metrics (a SubjectAccessReview): what
// controller-runtime's secure metrics and kube-rbac-proxy do. A decision
// is kept for a minute per token, so a scrape every 15 s costs the API
// server two reviews a minute per scraper, not eight.
type Auth struct {
	client   kubernetes.Interface
	clock    clock.PassiveClock
	ttl      time.Duration
	timeout  time.Duration
	requests *prometheus.CounterVec

	mu    sync.Mutex
	cache map[[sha256.Size]byte]decision
}

type decision struct {
	outcome string
	until   time.Time
}

// maxCached bounds the decisions kept: a client sending a new token per
// request cannot grow the cache past it.
const maxCached = 256

// NewAuth returns an Auth asking client, its outcomes counted on reg.
func NewAuth(client kubernetes.Interface, clk clock.PassiveClock, reg prometheus.Registerer) *Auth {
	a := &Auth{client: client, clock: clk, ttl: time.Minute, timeout: 10 * time.Second,
		cache: map[[sha256.Size]byte]decision{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lastcall_metrics_requests_total",
			Help: "Requests for /metrics under --metrics-auth=kubernetes, by outcome: allowed, unauthenticated (no token, or one the API server rejects), forbidden (no RBAC grant of get on /metrics), error (a review could not be made).",
		}, []string{"outcome"}),
	}
	for _, o := range []string{AuthAllowed, AuthUnauthenticated, AuthForbidden, AuthError} {
		a.requests.WithLabelValues(o)
	}
	reg.MustRegister(a.requests)
	return a
}

// Wrap answers 401 or 403 (500 when a review fails) in place of next to a
// request not allowed.
func (a *Auth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outcome := a.decide(r)
		a.requests.WithLabelValues(outcome).Inc()
		switch outcome {
		case AuthAllowed:
			next.ServeHTTP(w, r)
		case AuthUnauthenticated:
			http.Error(w, "Unauthorized: a bearer token the Kubernetes API server authenticates is required", http.StatusUnauthorized)
		case AuthForbidden:
			http.Error(w, "Forbidden: the token's user may not get "+MetricsPath, http.StatusForbidden)
		default:
			http.Error(w, "the Kubernetes API server could not review the request", http.StatusInternalServerError)
		}
	})
}

func (a *Auth) decide(r *http.Request) string {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return AuthUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	now := a.clock.Now()
	a.mu.Lock()
	if d, ok := a.cache[key]; ok && now.Before(d.until) {
		a.mu.Unlock()
		return d.outcome
	}
	a.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	outcome := a.review(ctx, token)
	if outcome == AuthError {
		return outcome // not kept: the next scrape asks again
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCached {
		for k, d := range a.cache {
			if !now.Before(d.until) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= maxCached {
			clear(a.cache)
		}
	}
	a.cache[key] = decision{outcome: outcome, until: now.Add(a.ttl)}
	return outcome
}

func (a *Auth) review(ctx context.Context, token string) string {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return AuthError
	}
	if !tr.Status.Authenticated {
		return AuthUnauthenticated
	}
	u := tr.Status.User
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: MetricsPath, Verb: "get"},
		}}, metav1.CreateOptions{})
	if err != nil {
		return AuthError
	}
	if !sar.Status.Allowed {
		return AuthForbidden
	}
	return AuthAllowed
}

// SelfSignedTLS returns a TLS configuration serving a certificate made now
// for hosts, valid a year: scrapers of pods by IP skip verification, as
// they do with kube-rbac-proxy's own self-signed certificate.
func SelfSignedTLS(hosts ...string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "lastcall-metrics"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     hosts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}
