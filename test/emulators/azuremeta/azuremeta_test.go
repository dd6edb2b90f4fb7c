package azuremeta

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// call makes one request and returns the status and body.
func call(t *testing.T, method, url string, header bool, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if header {
		req.Header.Set("Metadata", "true")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

type doc struct {
	DocumentIncarnation int
	Events              []map[string]any
}

func getDoc(t *testing.T, s *Server) doc {
	t.Helper()
	status, body := call(t, http.MethodGet, s.URL()+Path+"?api-version="+APIVersion, true, "")
	if status != http.StatusOK {
		t.Fatalf("GET: %d %s", status, body)
	}
	var d doc
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("GET: %v in %s", err, body)
	}
	return d
}

func TestDocument(t *testing.T) {
	t.Parallel()
	s := start(t)
	if d := getDoc(t, s); d.DocumentIncarnation != 1 || d.Events == nil || len(d.Events) != 0 {
		t.Errorf("initial document %+v, want incarnation 1 and an empty Events list", d)
	}
	notBefore := time.Date(2016, 9, 19, 18, 29, 47, 0, time.UTC)
	s.SetEvents(Event{EventID: "e1", EventType: "Preempt", NotBefore: FormatTime(notBefore), Resources: []string{"vm1"}, DurationInSeconds: -1})
	d := getDoc(t, s)
	if d.DocumentIncarnation != 2 || len(d.Events) != 1 {
		t.Fatalf("document %+v", d)
	}
	want := map[string]any{
		"EventId": "e1", "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": []any{"vm1"},
		"EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", "Description": "",
		"EventSource": "Platform", "DurationInSeconds": float64(-1),
	}
	for k, v := range want {
		if got := d.Events[0][k]; !equalJSON(got, v) {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	if len(d.Events[0]) != len(want) {
		t.Errorf("keys %v, want those of %v", d.Events[0], want)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	s := start(t)
	s.SetEvents(Event{EventID: "e1", EventType: "Reboot", NotBefore: FormatTime(time.Now())})
	url := s.URL() + Path + "?api-version=" + APIVersion
	for _, tc := range []struct {
		name, method, url string
		header            bool
		body              string
		status            int
		errText           string
	}{
		{"no header", http.MethodGet, url, false, "", 400, "Bad request. Required metadata header not specified"},
		{"no header on POST", http.MethodPost, url, false, `{"StartRequests":[{"EventId":"e1"}]}`, 400, "Required metadata header"},
		{"no api-version", http.MethodGet, s.URL() + Path, true, "", 400, "api-version was not specified"},
		{"unknown api-version", http.MethodGet, s.URL() + Path + "?api-version=2099-01-01", true, "", 400, "api-version is invalid"},
		{"bad JSON", http.MethodPost, url, true, `{"StartRequests":`, 400, "not valid JSON"},
		{"no StartRequests", http.MethodPost, url, true, `{}`, 400, "No StartRequests"},
		{"unknown EventId", http.MethodPost, url, true, `{"StartRequests":[{"EventId":"nope"}]}`, 400, "nope"},
		{"one unknown of two", http.MethodPost, url, true, `{"StartRequests":[{"EventId":"e1"},{"EventId":"nope"}]}`, 400, "nope"},
		{"other path", http.MethodGet, s.URL() + "/metadata/other?api-version=" + APIVersion, true, "", 404, ""},
		{"PUT", http.MethodPut, url, true, "", 405, ""},
	} {
		status, body := call(t, tc.method, tc.url, tc.header, tc.body)
		checkRefused(t, tc.name, status, body, tc.status, tc.errText)
	}
	if got := s.Approved(); len(got) != 0 {
		t.Errorf("approved %v by refused requests", got)
	}
	if got := s.Events(); got[0].EventStatus != "Scheduled" || got[0].NotBefore == "" {
		t.Errorf("event %+v changed by refused requests", got[0])
	}
	if s.Requests() != 10 || s.BadRequests() != 8 {
		t.Errorf("%d requests, %d bad, want 10 and 8", s.Requests(), s.BadRequests())
	}
}

func TestApprove(t *testing.T) {
	t.Parallel()
	s := start(t)
	at := FormatTime(time.Now().Add(time.Hour))
	s.SetEvents(
		Event{EventID: "e1", EventType: "Reboot", NotBefore: at},
		Event{EventID: "e2", EventType: "Freeze", NotBefore: at},
	)
	before := getDoc(t, s).DocumentIncarnation
	url := s.URL() + Path + "?api-version=" + APIVersion
	// The older body with DocumentIncarnation is accepted too.
	status, body := call(t, http.MethodPost, url, true, `{"DocumentIncarnation":"5","StartRequests":[{"EventId":"e2"}]}`)
	if status != http.StatusOK {
		t.Fatalf("POST: %d %s", status, body)
	}
	d := getDoc(t, s)
	if d.DocumentIncarnation <= before {
		t.Errorf("incarnation %d after approving, was %d", d.DocumentIncarnation, before)
	}
	for _, e := range d.Events {
		started := e["EventStatus"] == "Started" && e["NotBefore"] == ""
		if started != (e["EventId"] == "e2") {
			t.Errorf("event %v after approving e2", e)
		}
	}
	if got := s.Approved(); !slices.Equal(got, []string{"e2"}) {
		t.Errorf("approved %v", got)
	}
}

func TestRawAndStatus(t *testing.T) {
	t.Parallel()
	s := start(t)
	url := s.URL() + Path + "?api-version=" + APIVersion
	s.SetRawDocument([]byte("garbage"))
	if status, body := call(t, http.MethodGet, url, true, ""); status != 200 || body != "garbage" {
		t.Errorf("raw: %d %q", status, body)
	}
	s.SetStatus(http.StatusServiceUnavailable)
	if status, _ := call(t, http.MethodGet, url, true, ""); status != http.StatusServiceUnavailable {
		t.Errorf("status: %d", status)
	}
	s.SetEvents()
	if d := getDoc(t, s); len(d.Events) != 0 {
		t.Errorf("document %+v after SetEvents()", d)
	}
}

// nameURL is the compute name leaf of s, with query.
func nameURL(s *Server, query string) string { return s.URL() + ComputeNamePath + "?" + query }

func TestComputeName(t *testing.T) {
	t.Parallel()
	s := start(t)
	s.SetComputeName("aks-nodepool1-12345678-vmss_3")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, nameURL(s, "api-version=2021-02-01&format=text"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "aks-nodepool1-12345678-vmss_3" {
		t.Errorf("GET: %d %q, want 200 and the bare name", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	// Every documented version serves it.
	for _, v := range instanceAPIVersions() {
		if status, body := call(t, http.MethodGet, nameURL(s, "api-version="+v+"&format=text"), true, ""); status != http.StatusOK || body != "aks-nodepool1-12345678-vmss_3" {
			t.Errorf("api-version %s: %d %q", v, status, body)
		}
	}
	if n := s.ComputeNameRequests(); n != 1+len(instanceAPIVersions()) {
		t.Errorf("%d compute name requests counted, want %d", n, 1+len(instanceAPIVersions()))
	}
}

func TestComputeNameRefusals(t *testing.T) {
	t.Parallel()
	s := start(t)
	s.SetComputeName("vm1")
	good := "api-version=2021-02-01&format=text"
	for _, tc := range []struct {
		name, method, url string
		header            bool
		status            int
		errText           string
	}{
		{"no header", http.MethodGet, nameURL(s, good), false, 400, "Bad request. Required metadata header not specified"},
		{"no api-version", http.MethodGet, nameURL(s, "format=text"), true, 400, "api-version was not specified"},
		// A scheduled events version is not an instance metadata one.
		{"scheduled events api-version", http.MethodGet, nameURL(s, "api-version="+APIVersion+"&format=text"), true, 400, "api-version is invalid"},
		{"no format", http.MethodGet, nameURL(s, "api-version=2021-02-01"), true, 400, "format must be text"},
		{"format json", http.MethodGet, nameURL(s, "api-version=2021-02-01&format=json"), true, 400, "format must be text"},
		{"repeated parameter", http.MethodGet, nameURL(s, good+"&format=text"), true, 400, "Duplicate query parameter format"},
		{"POST", http.MethodPost, nameURL(s, good), true, 405, ""},
		{"other leaf", http.MethodGet, s.URL() + "/metadata/instance/compute/vmId?" + good, true, 404, ""},
		{"whole document", http.MethodGet, s.URL() + "/metadata/instance?api-version=2021-02-01", true, 404, ""},
	} {
		status, body := call(t, tc.method, tc.url, tc.header, "")
		checkRefused(t, tc.name, status, body, tc.status, tc.errText)
	}

	// X-Forwarded-For is refused on every endpoint.
	for _, url := range []string{nameURL(s, good), s.URL() + Path + "?api-version=" + APIVersion} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Metadata", "true")
		req.Header.Set("X-Forwarded-For", "10.0.0.1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s with X-Forwarded-For: %d, want 400", url, resp.StatusCode)
		}
	}
}

func TestComputeNameUnsetAndFailing(t *testing.T) {
	t.Parallel()
	s := start(t)
	url := nameURL(s, "api-version=2021-02-01&format=text")
	if status, body := call(t, http.MethodGet, url, true, ""); status != http.StatusNotFound {
		t.Errorf("unset: %d %s, want 404", status, body)
	}
	s.SetComputeName("vm1")
	s.FailComputeName(http.StatusGone, 2)
	for i := range 2 {
		if status, body := call(t, http.MethodGet, url, true, ""); status != http.StatusGone || !strings.Contains(body, "error") {
			t.Errorf("failure %d: %d %s, want 410", i, status, body)
		}
	}
	// A refused request does not use up a failure.
	s.FailComputeName(http.StatusTooManyRequests, 1)
	if status, _ := call(t, http.MethodGet, url, false, ""); status != http.StatusBadRequest {
		t.Errorf("no header: %d, want 400", status)
	}
	if status, _ := call(t, http.MethodGet, url, true, ""); status != http.StatusTooManyRequests {
		t.Errorf("after the refusal: %d, want 429", status)
	}
	if status, body := call(t, http.MethodGet, url, true, ""); status != http.StatusOK || body != "vm1" {
		t.Errorf("after the failures: %d %q, want 200 vm1", status, body)
	}
	// The scheduled events document is not affected.
	getDoc(t, s)
}

// checkRefused checks an answer is status, with Azure's {"error": ...}
// body saying errText.
func checkRefused(t *testing.T, name string, status int, body string, wantStatus int, errText string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (%s)", name, status, wantStatus, body)
		return
	}
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Errorf("%s: body %q is not Azure's {\"error\": ...}", name, body)
	}
	if !strings.Contains(e.Error, errText) {
		t.Errorf("%s: error %q, want %q in it", name, e.Error, errText)
	}
}
