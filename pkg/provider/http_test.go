package provider

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A metadata client asks no proxy and follows no redirect: a redirect off
// the link-local address is answered as it came.
func TestMetadataHTTPClient(t *testing.T) {
	c := MetadataHTTPClient(time.Second)
	tr, ok := c.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("transport %T with a proxy function: metadata would go through HTTP_PROXY", c.Transport)
	}
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { t.Error("the redirect was followed") }))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusFound)
	}))
	defer srv.Close()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("status %d, want the redirect itself", resp.StatusCode)
	}
	if err := CheckURL("http://169.254.169.254"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"169.254.169.254", "ftp://x", "http://", "://"} {
		if CheckURL(bad) == nil {
			t.Errorf("CheckURL(%q) accepted it", bad)
		}
	}
}
