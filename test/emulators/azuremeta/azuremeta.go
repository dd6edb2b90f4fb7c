package azuremeta

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Path is the path of the scheduled events endpoint.
const Path = "/metadata/scheduledevents"

// APIVersion is the api-version clients are expected to send; see
// apiVersions for every one the fake accepts.
const APIVersion = "2020-07-01"

// apiVersions are the scheduled events versions Azure documents, newest
// first.
func apiVersions() []string {
	return []string{"2020-07-01", "2019-08-01", "2019-04-01", "2019-01-01", "2017-11-01", "2017-08-01", "2017-03-01"}
}

// ComputeNamePath is the instance metadata leaf that holds the VM's name.
const ComputeNamePath = "/metadata/instance/compute/name"

// instancePath is the root of the instance metadata category.
const instancePath = "/metadata/instance"

// instanceAPIVersions are the instance metadata versions Azure documents,
// newest first; compute/name is in every one.
func instanceAPIVersions() []string {
	return []string{
		"2021-12-13", "2021-11-15", "2021-11-01", "2021-10-01", "2021-08-01", "2021-05-01", "2021-03-01",
		"2021-02-01", "2021-01-01", "2020-12-01", "2020-10-01", "2020-09-01", "2020-07-15", "2020-06-01",
		"2019-11-01", "2019-08-15", "2019-08-01", "2019-06-04", "2019-06-01", "2019-04-30", "2019-03-11",
		"2019-02-01", "2018-10-01", "2018-04-02", "2018-02-01", "2017-12-01", "2017-10-01", "2017-08-01",
		"2017-04-02", "2017-03-01",
	}
}

// The error texts Azure answers with (see the package doc).
const (
	errNoMetadataHeader = "Bad request. Required metadata header not specified"
	errNoAPIVersion     = "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds"
	errBadAPIVersion    = "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds"
	// The texts below are the fake's own (see the package doc).
	errForwarded      = "Bad request. X-Forwarded-For header is not allowed"
	errDuplicateQuery = "Bad request. Duplicate query parameter"
	errLeafFormat     = "Bad request. Query parameter format must be text for a leaf node"
	errNotFound       = "Not found"
)

// maxBody bounds what the fake reads of a POST body.
const maxBody = 64 << 10

// Event is one scheduled event as the document lists it.
type Event struct {
	EventID      string
	EventType    string // Reboot, Redeploy, Freeze, Preempt or Terminate
	ResourceType string // "" is served as "VirtualMachine"
	EventStatus  string // Scheduled or Started; "" is served as "Scheduled"
	// NotBefore is served as given: use FormatTime. Azure leaves it empty
	// once the event has Started.
	NotBefore         string
	Description       string
	EventSource       string // Platform or User; "" is served as "Platform"
	Resources         []string
	DurationInSeconds int
}

// FormatTime writes t as Azure writes NotBefore: RFC 1123 in GMT.
func FormatTime(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

// wireEvent is Event with Azure's JSON keys, in Azure's order.
type wireEvent struct {
	EventID           string   `json:"EventId"`
	EventStatus       string   `json:"EventStatus"`
	EventType         string   `json:"EventType"`
	ResourceType      string   `json:"ResourceType"`
	Resources         []string `json:"Resources"`
	NotBefore         string   `json:"NotBefore"`
	Description       string   `json:"Description"`
	EventSource       string   `json:"EventSource"`
	DurationInSeconds int      `json:"DurationInSeconds"`
}

type document struct {
	DocumentIncarnation int         `json:"DocumentIncarnation"`
	Events              []wireEvent `json:"Events"`
}

type startRequests struct {
	StartRequests []struct {
		EventID string `json:"EventId"`
	} `json:"StartRequests"`
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu          sync.Mutex
	doc         document
	raw         []byte // served instead of doc when not nil
	status      int    // GETs fail with it when not 0
	approved    []string
	requests    int
	badRequests int

	computeName     string // "" answers 404
	computeStatus   int    // the next computeFailures compute/name GETs fail with it
	computeFailures int
	computeRequests int
}

// Start serves an empty document (DocumentIncarnation 1, no events) on a
// free port of 127.0.0.1.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("azuremeta: listening: %w", err)
	}
	s := &Server{
		ln:   ln,
		done: make(chan struct{}),
		doc:  document{DocumentIncarnation: 1, Events: []wireEvent{}},
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln) //nolint:errcheck // always ErrServerClosed after Close
	}()
	return s, nil
}

// URL is the endpoint's base, "http://127.0.0.1:<port>", to use in place of
// http://169.254.169.254.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// SetEvents replaces the document's events and bumps DocumentIncarnation.
// It also stops serving a raw document or a status set before.
func (s *Server) SetEvents(events ...Event) {
	wire := make([]wireEvent, 0, len(events))
	for _, e := range events {
		w := wireEvent{
			EventID:           e.EventID,
			EventStatus:       cmp.Or(e.EventStatus, "Scheduled"),
			EventType:         e.EventType,
			ResourceType:      cmp.Or(e.ResourceType, "VirtualMachine"),
			Resources:         slices.Clone(e.Resources),
			NotBefore:         e.NotBefore,
			Description:       e.Description,
			EventSource:       cmp.Or(e.EventSource, "Platform"),
			DurationInSeconds: e.DurationInSeconds,
		}
		if w.Resources == nil {
			w.Resources = []string{}
		}
		wire = append(wire, w)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc.Events = wire
	s.doc.DocumentIncarnation++
	s.raw, s.status = nil, 0
}

// Events returns the events listed now, approvals applied.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	events := make([]Event, 0, len(s.doc.Events))
	for _, w := range s.doc.Events {
		events = append(events, Event{
			EventID: w.EventID, EventType: w.EventType, ResourceType: w.ResourceType,
			EventStatus: w.EventStatus, NotBefore: w.NotBefore, Description: w.Description,
			EventSource: w.EventSource, Resources: slices.Clone(w.Resources),
			DurationInSeconds: w.DurationInSeconds,
		})
	}
	return events
}

// DocumentIncarnation is the incarnation served now.
func (s *Server) DocumentIncarnation() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doc.DocumentIncarnation
}

// SetRawDocument makes GETs answer 200 with body instead of the document,
// until SetEvents or SetRawDocument(nil).
func (s *Server) SetRawDocument(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = bytes.Clone(body)
}

// SetStatus makes GETs answer status with an {"error": ...} body, until
// SetEvents or SetStatus(0).
func (s *Server) SetStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// SetComputeName sets the VM's name, served at ComputeNamePath. Until it
// is set (or when set to ""), that leaf answers 404, as IMDS answers for an
// element that does not exist.
func (s *Server) SetComputeName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.computeName = name
}

// FailComputeName makes the next n requests for ComputeNamePath that pass
// the checks of headers and parameters answer status with an {"error":
// ...} body, as IMDS does while it is busy (429, 500) or not ready (410).
func (s *Server) FailComputeName(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.computeStatus, s.computeFailures = status, n
}

// ComputeNameRequests is how many requests for ComputeNamePath the fake
// has answered, refused ones included.
func (s *Server) ComputeNameRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.computeRequests
}

// Approved returns the EventIds approved through StartRequests, in order.
func (s *Server) Approved() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.approved)
}

// Requests is how many requests the fake has answered, refused ones
// included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// BadRequests is how many requests were answered 400.
func (s *Server) BadRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.badRequests
}

// Close stops the server, waiting for it; it is safe to call more than
// once.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close() //nolint:errcheck // nothing more to do
	}
	<-s.done
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	if r.URL.Path == ComputeNamePath {
		s.computeRequests++
	}
	s.mu.Unlock()
	var versions []string
	switch {
	case r.URL.Path == Path:
		versions = apiVersions()
	case r.URL.Path == instancePath || strings.HasPrefix(r.URL.Path, instancePath+"/"):
		versions = instanceAPIVersions()
	default:
		s.writeError(w, http.StatusNotFound, errNotFound)
		return
	}
	if !strings.EqualFold(r.Header.Get("Metadata"), "true") {
		s.writeError(w, http.StatusBadRequest, errNoMetadataHeader)
		return
	}
	if _, ok := r.Header["X-Forwarded-For"]; ok {
		s.writeError(w, http.StatusBadRequest, errForwarded)
		return
	}
	query := r.URL.Query()
	for k, v := range query {
		if len(v) > 1 {
			s.writeError(w, http.StatusBadRequest, errDuplicateQuery+" "+k)
			return
		}
	}
	if !query.Has("api-version") {
		s.writeJSON(w, http.StatusBadRequest, map[string]any{"error": errNoAPIVersion, "newest-versions": versions[:3]})
		return
	}
	if !slices.Contains(versions, query.Get("api-version")) {
		s.writeJSON(w, http.StatusBadRequest, map[string]any{"error": errBadAPIVersion, "newest-versions": versions[:3]})
		return
	}
	if r.URL.Path != Path {
		s.instance(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.get(w)
	case http.MethodPost:
		s.post(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
	}
}

// instance answers instance metadata: the leaf ComputeNamePath only.
func (s *Server) instance(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	if r.URL.Path != ComputeNamePath {
		s.writeError(w, http.StatusNotFound, errNotFound)
		return
	}
	if r.URL.Query().Get("format") != "text" {
		s.writeError(w, http.StatusBadRequest, errLeafFormat)
		return
	}
	s.mu.Lock()
	name, status := s.computeName, 0
	if s.computeFailures > 0 {
		s.computeFailures--
		status = s.computeStatus
	}
	s.mu.Unlock()
	switch {
	case status != 0:
		s.writeError(w, status, http.StatusText(status))
	case name == "":
		s.writeError(w, http.StatusNotFound, errNotFound)
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, name) //nolint:errcheck // the client went away
	}
}

func (s *Server) get(w http.ResponseWriter) {
	s.mu.Lock()
	raw, status := s.raw, s.status
	body, err := json.Marshal(s.doc)
	s.mu.Unlock()
	switch {
	case status != 0:
		s.writeError(w, status, http.StatusText(status))
	case raw != nil:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write(raw) //nolint:errcheck // the client went away
	case err != nil:
		s.writeError(w, http.StatusInternalServerError, err.Error())
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write(body) //nolint:errcheck // the client went away
	}
}

func (s *Server) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.writeError(w, http.StatusBadRequest, "Bad request. Could not read the request body")
		return
	}
	var req startRequests
	if err := json.Unmarshal(body, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "Bad request. The request body is not valid JSON")
		return
	}
	if len(req.StartRequests) == 0 {
		s.writeError(w, http.StatusBadRequest, "Bad request. No StartRequests in the request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Validate every request before applying any.
	for _, sr := range req.StartRequests {
		if s.find(sr.EventID) < 0 {
			s.badRequests++
			writeJSONLocked(w, http.StatusBadRequest, map[string]string{
				"error": fmt.Sprintf("Bad request. EventId %q is not a scheduled event of this VM", sr.EventID),
			})
			return
		}
	}
	for _, sr := range req.StartRequests {
		e := &s.doc.Events[s.find(sr.EventID)]
		e.EventStatus, e.NotBefore = "Started", ""
		s.approved = append(s.approved, sr.EventID)
	}
	s.doc.DocumentIncarnation++
	w.WriteHeader(http.StatusOK)
}

// find returns the index of the event with id, or -1. s.mu is held.
func (s *Server) find(id string) int {
	return slices.IndexFunc(s.doc.Events, func(e wireEvent) bool { return e.EventID == id })
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string) {
	s.writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	if status == http.StatusBadRequest {
		s.mu.Lock()
		s.badRequests++
		s.mu.Unlock()
	}
	writeJSONLocked(w, status, v)
}

// writeJSONLocked writes v; it takes no lock (the name says it may be
// called with s.mu held).
func writeJSONLocked(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		body = []byte(`{"error":"internal error"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client went away
}
