// Package server serves /metrics, /healthz and /readyz on a mux of its own.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check returns nil when healthy and an error saying why not otherwise.
type Check func() error

// Handler returns the mux: /metrics from gatherer, /healthz from healthz,
// /readyz from readyz. A failing check answers 503 with its reason. auth,
// when not nil, guards /metrics; the probes stay open (a kubelet's probe
// carries no token), and say only healthy or not and which source.
func Handler(gatherer prometheus.Gatherer, healthz, readyz Check, auth *Auth) http.Handler {
	mux := http.NewServeMux()
	var metrics http.Handler = promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{Timeout: 10 * time.Second})
	if auth != nil {
		metrics = auth.Wrap(metrics)
	}
	mux.Handle("GET "+MetricsPath, metrics)
	mux.Handle("GET /healthz", checkHandler(healthz))
	mux.Handle("GET /readyz", checkHandler(readyz))
	return mux
}

func checkHandler(check Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// Serve serves h on ln until ctx ends, then shuts down within 5 s; over
// TLS when tlsConfig is not nil.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, tlsConfig *tls.Config, log *slog.Logger) error {
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving metrics and probes", "address", ln.Addr().String(), "tls", tlsConfig != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
