// Package cloud tells which cloud this node runs in, by asking each cloud's
// instance metadata service the question only it answers, with short
// timeouts and all at once.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// The clouds lastcall knows.
const (
	AWS   = "aws"
	GCE   = "gce"
	Azure = "azure"
)

// All lists them in order of preference when several answer.
var All = []string{AWS, GCE, Azure}

// Endpoints are where each metadata service is asked. Empty fields take
// the clouds' own addresses (GCE's from $GCE_METADATA_HOST when set).
type Endpoints struct {
	AWS, GCE, Azure string
}

func (e Endpoints) withDefaults() Endpoints {
	if e.AWS == "" {
		e.AWS = "http://169.254.169.254"
	}
	if e.GCE == "" {
		if h := os.Getenv("GCE_METADATA_HOST"); h != "" {
			e.GCE = "http://" + h
		} else {
			e.GCE = "http://169.254.169.254"
		}
	}
	if e.Azure == "" {
		e.Azure = "http://169.254.169.254"
	}
	return e
}

// Detect asks every metadata service at once, each bounded by timeout, and
// returns the preferred cloud that answered. When none did, the error says
// what each one answered.
func Detect(ctx context.Context, client *http.Client, ep Endpoints, timeout time.Duration) (string, error) {
	ep = ep.withDefaults()
	probes := map[string]func(context.Context) error{
		AWS:   func(ctx context.Context) error { return probeAWS(ctx, client, ep.AWS) },
		GCE:   func(ctx context.Context) error { return probeGCE(ctx, client, ep.GCE) },
		Azure: func(ctx context.Context) error { return probeAzure(ctx, client, ep.Azure) },
	}
	// Ask all at once; take the answers in order of preference, so the
	// first cloud that says yes wins without waiting on slower refusals.
	answers := map[string]chan error{}
	for _, name := range All {
		ch := make(chan error, 1)
		answers[name] = ch
		go func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			ch <- probes[name](pctx)
		}()
	}
	var errs []error
	for _, c := range All {
		err := <-answers[c]
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", c, err))
	}
	return "", fmt.Errorf("no cloud metadata service answered (set --cloud to choose one): %w", errors.Join(errs...))
}

// probeAWS asks for an IMDSv2 session token: only EC2 answers it.
func probeAWS(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(base, "/")+"/latest/api/token", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	return expect(c, req, func(r *http.Response) bool { return r.StatusCode == http.StatusOK })
}

// probeGCE asks with Metadata-Flavor: Google; GCE answers with it too.
func probeGCE(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/computeMetadata/v1/instance/id", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	return expect(c, req, func(r *http.Response) bool {
		return r.StatusCode == http.StatusOK && r.Header.Get("Metadata-Flavor") == "Google"
	})
}

// probeAzure asks Azure's scheduled events document with Metadata: true.
func probeAzure(ctx context.Context, c *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metadata/scheduledevents?api-version=2020-07-01", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Metadata", "true")
	return expect(c, req, func(r *http.Response) bool {
		return r.StatusCode == http.StatusOK && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
	})
}

func expect(c *http.Client, req *http.Request, ok func(*http.Response) bool) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if !ok(resp) {
		return fmt.Errorf("%s %s answered %s, not as this cloud would", req.Method, req.URL.Path, resp.Status)
	}
	return nil
}
