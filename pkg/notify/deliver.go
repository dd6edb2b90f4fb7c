package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// deliver renders m and posts it, retrying network errors, 429 and 5xx.
func (n *Notifier) deliver(ctx context.Context, m Notification) {
	log := n.log.With("phase", m.Phase, "node", m.Node, "instance", m.Instance, "kind", m.Kind)
	body, err := n.render(m)
	if err != nil {
		n.metrics.count(m.Phase, resultFailed)
		log.Error("notification not sent: its body could not be rendered", "err", err, "output", excerpt(body))
		return
	}
	start := n.clock.Now()
	backoff := wait.Backoff{Duration: n.backoff, Factor: 2, Jitter: 1, Cap: maxWait, Steps: maxAttempts}
	for attempt := 1; ; attempt++ {
		retry, after, err := n.post(ctx, body)
		if err == nil {
			n.metrics.count(m.Phase, resultSent)
			n.metrics.duration.WithLabelValues(resultSent).Observe(n.clock.Since(start).Seconds())
			log.Info("notification sent", "host", n.host, "attempt", attempt)
			return
		}
		attrs := []any{"host", n.host, "attempt", attempt, "err", err}
		var se *statusError
		if errors.As(err, &se) {
			attrs = append(attrs, "status", se.code, "body", se.body)
		}
		if !retry || attempt == maxAttempts || ctx.Err() != nil {
			n.metrics.count(m.Phase, resultFailed)
			n.metrics.duration.WithLabelValues(resultFailed).Observe(n.clock.Since(start).Seconds())
			log.Error("notification failed", append(attrs, "retry", false)...)
			return
		}
		pause := min(max(after, backoff.Step()), maxWait)
		log.Warn("notification attempt failed", append(attrs, "retry_in", pause)...)
		t := n.clock.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-t.C():
		}
		t.Stop()
	}
}

// statusError is a webhook's answer other than 2xx.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("webhook answered %d", e.code) }

// post sends body once. It says whether a failure is worth retrying and
// how long the webhook asked to wait (Retry-After).
func (n *Notifier) post(ctx context.Context, body []byte) (retry bool, wait time.Duration, err error) {
	actx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, n.redact(err)
	}
	req.Header = n.headers.Clone()
	resp, err := n.client.Do(req)
	if err != nil {
		return true, 0, n.redact(err)
	}
	defer resp.Body.Close()
	start, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	retry = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, retryAfter(resp.Header.Get("Retry-After")), &statusError{code: resp.StatusCode, body: excerpt(start)}
}

// redact replaces the URL in an HTTP client error with its host.
func (n *Notifier) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s to %s: %w", ue.Op, n.host, ue.Err)
	}
	return err
}

// retryAfter reads a Retry-After header in seconds; 0 when absent or in
// another form.
func retryAfter(h string) time.Duration {
	s, err := strconv.Atoi(h)
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}
