package provider

import (
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// MetadataHTTPClient is an HTTP client for an instance metadata service:
// it never goes through a proxy (the service answers on a link-local
// address, and a proxy would answer for another machine, or not at all),
// follows no redirects, and gives up waiting for an answer after timeout.
func MetadataHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			MaxIdleConns:          4,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Expect sends req and says, when ok does not accept the answer, what the
// service answered: detection's probe.
func Expect(c *http.Client, req *http.Request, ok func(*http.Response) bool) error {
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

// CheckURL says why raw, when not empty, is not an absolute http or https
// URL with a host: a metadata endpoint flag.
func CheckURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http or https URL; got %q", raw)
	}
	return nil
}
