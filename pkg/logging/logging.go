// Package logging builds lastcall's slog logger and routes client-go's klog
// output into it.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"k8s.io/klog/v2"
)

// New returns a logger writing format ("json" or "text") at level
// ("debug", "info", "warn", "error") to w, and makes klog log through it.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
	log := slog.New(h)
	klog.SetSlogLogger(log.With("component", "client-go"))
	return log, nil
}
