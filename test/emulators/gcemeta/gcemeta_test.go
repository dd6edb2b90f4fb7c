package gcemeta

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"
)

// start runs a Server for the test and points the library at it.
func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Setenv("GCE_METADATA_HOST", s.Host())
	return s
}

// newClient is an isolated library client: no timeout on long polls.
func newClient() *metadata.Client { return metadata.NewWithOptions(&metadata.Options{}) }

type answer struct {
	code  int
	body  string
	etag  string
	hdr   http.Header
	taken time.Duration
}

// get does a raw GET of url, with the Metadata-Flavor header if flavored.
func get(t *testing.T, url string, flavored bool) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if flavored {
		req.Header.Set("Metadata-Flavor", "Google")
	}
	begin := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{code: res.StatusCode, body: string(b), etag: res.Header.Get("ETag"), hdr: res.Header, taken: time.Since(begin)}
}

func TestGetThroughLibrary(t *testing.T) {
	start(t)
	c := newClient()
	ctx := t.Context()
	if !c.OnGCEWithContext(ctx) {
		t.Error("OnGCE = false with GCE_METADATA_HOST set")
	}
	for path, want := range map[string]string{
		"instance/preempted":                     "FALSE",
		"instance/maintenance-event":             "NONE",
		"instance/scheduling/provisioning-model": "SPOT",
		"instance/scheduling/preemptible":        "TRUE",
		"project/project-id":                     DefaultProjectID,
	} {
		got, err := c.GetWithContext(ctx, path)
		if err != nil || got != want {
			t.Errorf("Get(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if z, err := c.ZoneWithContext(ctx); err != nil || z != "us-central1-a" {
		t.Errorf("Zone = %q, %v", z, err)
	}
	if id, err := c.InstanceIDWithContext(ctx); err != nil || id != DefaultInstanceID {
		t.Errorf("InstanceID = %q, %v", id, err)
	}
	if n, err := c.InstanceNameWithContext(ctx); err != nil || n != DefaultInstanceName {
		t.Errorf("InstanceName = %q, %v", n, err)
	}
	_, err := c.GetWithContext(ctx, "instance/no-such-thing")
	var nd metadata.NotDefinedError
	if !errors.As(err, &nd) {
		t.Errorf("Get(unknown) error = %v, want NotDefinedError", err)
	}
}

func TestHeaders(t *testing.T) {
	s := start(t)
	base := "http://" + s.Host()
	a := get(t, base+"/computeMetadata/v1/instance/preempted", false)
	if a.code != http.StatusForbidden {
		t.Errorf("without Metadata-Flavor: code %d, want 403", a.code)
	}
	a = get(t, base+"/computeMetadata/v1/instance/preempted", true)
	if a.code != http.StatusOK || a.body != "FALSE" {
		t.Errorf("with Metadata-Flavor: %d %q", a.code, a.body)
	}
	if a.hdr.Get("Metadata-Flavor") != "Google" || a.etag == "" {
		t.Errorf("answer headers %v: want Metadata-Flavor: Google and an ETag", a.hdr)
	}
	if a := get(t, base+"/computeMetadata/v1/instance/nope", true); a.code != http.StatusNotFound {
		t.Errorf("unknown path: code %d, want 404", a.code)
	}
	if a := get(t, base+"/", false); a.code != http.StatusOK || a.hdr.Get("Metadata-Flavor") != "Google" {
		t.Errorf("root: %d %v", a.code, a.hdr)
	}
	if got := s.Requests("instance/preempted"); got != 2 {
		t.Errorf("Requests = %d, want 2", got)
	}
}

func TestETagChangesOnSet(t *testing.T) {
	s := start(t)
	url := "http://" + s.Host() + "/computeMetadata/v1/instance/preempted"
	a1 := get(t, url, true)
	a2 := get(t, url, true)
	if a1.etag != a2.etag {
		t.Errorf("ETag changed without a Set: %q, %q", a1.etag, a2.etag)
	}
	s.Set("instance/preempted", "TRUE")
	a3 := get(t, url, true)
	if a3.etag == a1.etag || a3.body != "TRUE" {
		t.Errorf("after Set: %q etag %q (was %q)", a3.body, a3.etag, a1.etag)
	}
	// A stale last_etag answers at once.
	a4 := get(t, url+"?wait_for_change=true&last_etag="+a1.etag, true)
	if a4.body != "TRUE" || a4.taken > 500*time.Millisecond {
		t.Errorf("stale last_etag: %q after %v, want TRUE at once", a4.body, a4.taken)
	}
}

func TestLongPollBlocksUntilSet(t *testing.T) {
	s := start(t)
	url := "http://" + s.Host() + "/computeMetadata/v1/instance/maintenance-event"
	cur := get(t, url, true)
	done := make(chan answer, 1)
	go func() {
		// get must not call t.Fatal off the test goroutine: use a plain request.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"?wait_for_change=true&last_etag="+cur.etag, nil)
		req.Header.Set("Metadata-Flavor", "Google")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{body: err.Error()}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		done <- answer{code: res.StatusCode, body: string(b), etag: res.Header.Get("ETag")}
	}()
	select {
	case a := <-done:
		t.Fatalf("long poll answered before any change: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	s.Set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
	select {
	case a := <-done:
		if a.code != http.StatusOK || a.body != "TERMINATE_ON_HOST_MAINTENANCE" || a.etag == cur.etag {
			t.Errorf("long poll answered %+v", a)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("long poll not woken by Set")
	}
}

func TestTimeoutSec(t *testing.T) {
	s := start(t)
	url := "http://" + s.Host() + "/computeMetadata/v1/instance/preempted"
	cur := get(t, url, true)
	a := get(t, url+"?wait_for_change=true&timeout_sec=1&last_etag="+cur.etag, true)
	if a.code != http.StatusOK || a.body != "FALSE" || a.etag != cur.etag {
		t.Errorf("after timeout: %+v, want the unchanged value and ETag", a)
	}
	if a.taken < 900*time.Millisecond || a.taken > 3*time.Second {
		t.Errorf("timeout_sec=1 answered after %v", a.taken)
	}
}

// TestSubscribe drives the library's long polling: it sees a Set at once,
// and does not spin while nothing changes.
func TestSubscribe(t *testing.T) {
	s := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	values := make(chan string, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- newClient().SubscribeWithContext(ctx, "instance/preempted", func(ctx context.Context, v string, ok bool) error {
			select {
			case values <- v:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case v := <-values:
			if v != want {
				t.Fatalf("Subscribe saw %q, want %q", v, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("Subscribe did not see %q", want)
		}
	}
	expect("FALSE")
	time.Sleep(time.Second) // Nothing changes: the subscription must wait, not spin.
	if n := s.Requests("instance/preempted"); n > 3 {
		t.Errorf("%d requests in 1 s of no change: Subscribe is spinning", n)
	}
	select {
	case v := <-values:
		t.Errorf("Subscribe saw %q without a change", v)
	default:
	}
	s.Set("instance/preempted", "TRUE")
	expect("TRUE")
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe returned %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("Subscribe did not return on cancel")
	}
}

func TestCloseAnswersLongPolls(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Host() + "/computeMetadata/v1/instance/preempted?wait_for_change=true"
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		req.Header.Set("Metadata-Flavor", "Google")
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close blocked on a long poll")
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("long poll answered normally by a closing server, want a dropped connection")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("long poll not ended by Close")
	}
	// The port is free again: a new server can take it.
	s2, err := StartOn(s.Host())
	if err != nil {
		t.Fatalf("restarting on %s: %v", s.Host(), err)
	}
	s2.Close()
}
