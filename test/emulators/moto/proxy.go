package moto

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/test/emulators/child"
)

// The actions the proxy answers itself.
const (
	ActionCompleteLifecycleAction        = "CompleteLifecycleAction"
	ActionRecordLifecycleActionHeartbeat = "RecordLifecycleActionHeartbeat"
)

// The lifecycle action results Auto Scaling accepts.
const (
	ResultContinue = "CONTINUE"
	ResultAbandon  = "ABANDON"
)

// The sources of a Completion.
const (
	// SourceAPI: a CompleteLifecycleAction call completed the action.
	SourceAPI = "api"
	// SourceTimeout: the heartbeat timeout (or the global timeout) passed
	// and Auto Scaling applied the hook's default result.
	SourceTimeout = "timeout"
)

const (
	autoScalingVersion = "2011-01-01"
	ec2Version         = "2016-11-15"
	autoScalingXMLNS   = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
	sqsTargetPrefix    = "AmazonSQS."
	// globalTimeoutFactor and maxGlobalTimeout: Auto Scaling ends a
	// lifecycle action after 100 heartbeat timeouts or 48 hours, whichever
	// is shorter, however many heartbeats it had.
	globalTimeoutFactor = 100
	maxGlobalTimeout    = 48 * time.Hour
	// maxBody bounds the request bodies the proxy reads.
	maxBody = 8 << 20
	// readHeaderTimeout bounds reading a request's headers.
	readHeaderTimeout = 10 * time.Second
)

// LifecycleActionState is a lifecycle action the proxy treats as active, as
// Auto Scaling would have after putting an instance in Pending:Wait or
// Terminating:Wait.
type LifecycleActionState struct {
	GroupName  string
	HookName   string
	InstanceID string
	// Token is the LifecycleActionToken; Register generates a UUID when it
	// is empty.
	Token string
	// Transition is autoscaling:EC2_INSTANCE_TERMINATING or
	// autoscaling:EC2_INSTANCE_LAUNCHING; informational.
	Transition string
	// HeartbeatTimeout is how long the action lives without a heartbeat.
	// Zero: it never times out.
	HeartbeatTimeout time.Duration
	// DefaultResult is applied when the action times out: CONTINUE or
	// ABANDON (Auto Scaling's default, used when empty).
	DefaultResult string
}

// Call is one request the proxy answered itself: a lifecycle call, or any
// call that failed by FailNext.
type Call struct {
	// Action is the API action, e.g. CompleteLifecycleAction.
	Action string
	// GroupName, HookName, InstanceID, Token and Result are the request's
	// AutoScalingGroupName, LifecycleHookName, InstanceId,
	// LifecycleActionToken and LifecycleActionResult, when it has them.
	GroupName  string
	HookName   string
	InstanceID string
	Token      string
	Result     string
	// At is when the proxy answered (by its clock).
	At time.Time
	// Status is the HTTP status of the answer.
	Status int
	// ErrorCode is the error code of the answer, empty on success.
	ErrorCode string
	// Injected says the answer was a fault set with FailNext.
	Injected bool
}

// Completion is how a lifecycle action ended.
type Completion struct {
	// Result is CONTINUE or ABANDON.
	Result string
	// Token is the action's token.
	Token string
	// Source is SourceAPI or SourceTimeout.
	Source string
	// At is when it ended.
	At time.Time
}

// LifecycleProxy is a reverse proxy in front of moto_server that answers
// CompleteLifecycleAction and RecordLifecycleActionHeartbeat itself (moto
// answers 500 NotImplemented for both), injects faults, and forwards every
// other request to moto. It is an http.Handler; Start serves it on
// 127.0.0.1. Its methods are safe for concurrent use.
type LifecycleProxy struct {
	upstream    *url.URL
	upstreamErr error
	forward     *httputil.ReverseProxy

	mu          sync.Mutex
	clock       clock.PassiveClock
	actions     map[actionKey]*action
	completions map[string]Completion
	heartbeats  map[string]int
	calls       []Call
	faults      map[string][]*fault
	requests    map[string]int
	// inFlightLimit and receipts: see LimitInFlight.
	inFlightLimit time.Duration
	receipts      map[string]time.Time
	srv           *http.Server
	url           string
	closed        bool
}

// actionKey identifies an active action.
type actionKey struct{ group, hook, instance string }

// action is an active lifecycle action.
type action struct {
	LifecycleActionState
	started       time.Time
	lastHeartbeat time.Time
}

// fault is an error FailNext queued.
type fault struct {
	status    int
	code      string
	remaining int
}

// NewLifecycleProxy returns a proxy forwarding to upstream, moto's base URL
// (Server.URL). An invalid upstream is reported by Start, and by 502 answers
// to forwarded requests.
func NewLifecycleProxy(upstream string) *LifecycleProxy {
	p := &LifecycleProxy{
		clock:       clock.RealClock{},
		actions:     map[actionKey]*action{},
		completions: map[string]Completion{},
		heartbeats:  map[string]int{},
		faults:      map[string][]*fault{},
		requests:    map[string]int{},
	}
	u, err := url.Parse(upstream)
	if err == nil && (u.Scheme == "" || u.Host == "") {
		err = errors.New("not an absolute URL")
	}
	if err != nil {
		p.upstreamErr = fmt.Errorf("moto proxy upstream %q: %w", upstream, err)
		return p
	}
	p.upstream = u
	p.forward = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// moto builds SQS queue URLs from the Host header: keep the
			// proxy's, so that clients keep coming through it.
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Header.Get("X-Amz-Target") == sqsTargetPrefix+"ReceiveMessage" && p.limitingInFlight() {
				return p.recordReceipts(resp)
			}
			return nil
		},
	}
	return p
}

// WithClock makes the proxy read time from c (for Call.At and heartbeat
// timeouts); call it before the proxy serves. It returns p.
func (p *LifecycleProxy) WithClock(c clock.PassiveClock) *LifecycleProxy {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clock = c
	return p
}

// Start serves the proxy on a free port of 127.0.0.1 until Close.
func (p *LifecycleProxy) Start() error {
	if p.upstreamErr != nil {
		return p.upstreamErr
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil || p.closed {
		return errors.New("moto proxy: already started")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(child.Localhost, "0"))
	if err != nil {
		return fmt.Errorf("moto proxy: listening: %w", err)
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: readHeaderTimeout}
	p.url = "http://" + ln.Addr().String()
	go p.srv.Serve(ln) //nolint:errcheck // ends with http.ErrServerClosed on Close
	return nil
}

// URL is the proxy's base URL, "http://127.0.0.1:<port>", once started: the
// BaseEndpoint of the SDK clients under test.
func (p *LifecycleProxy) URL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.url
}

// Close stops serving. It is safe to call more than once.
func (p *LifecycleProxy) Close() {
	p.mu.Lock()
	srv := p.srv
	p.closed = true
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		srv.Close() //nolint:errcheck // closing listeners and connections
	}
}

// Register makes a an active lifecycle action, replacing any action of the
// same group, hook and instance, and returns its token (generated when
// a.Token is empty).
func (p *LifecycleProxy) Register(a LifecycleActionState) string {
	if a.Token == "" {
		a.Token = newUUID()
	}
	if a.DefaultResult == "" {
		a.DefaultResult = ResultAbandon
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	p.actions[actionKey{a.GroupName, a.HookName, a.InstanceID}] = &action{
		LifecycleActionState: a,
		started:              now,
		lastHeartbeat:        now,
	}
	return a.Token
}

// FailNext makes the next n requests for action (an Auto Scaling or EC2
// query action, or an SQS action such as ReceiveMessage) fail with the HTTP
// status and error code, before any other processing: e.g. 400
// "ValidationError", 400 "Throttling" or 500 "InternalFailure". Faults for
// the same action queue up. An injected ValidationError for a lifecycle call
// carries Auto Scaling's message for an action that is no longer active
// ("No active Lifecycle Action found with token ..."). faults.go names the
// faults AWS answers (Fault, Inject).
func (p *LifecycleProxy) FailNext(action string, status int, code string, n int) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[action] = append(p.faults[action], &fault{status: status, code: code, remaining: n})
}

// Requests returns how many requests for action (an SQS, Auto Scaling or
// EC2 action) the proxy has received, whoever answered them: the proxy,
// an injected fault or moto. Each attempt of the SDK's counts.
func (p *LifecycleProxy) Requests(action string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests[action]
}

// Calls returns every request the proxy answered itself, oldest first.
func (p *LifecycleProxy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// Completed returns the result of the last lifecycle action of the instance
// that ended, by a CompleteLifecycleAction call or by timing out.
func (p *LifecycleProxy) Completed(instanceID string) (result string, ok bool) {
	c, ok := p.Completion(instanceID)
	return c.Result, ok
}

// Completion returns how the last lifecycle action of the instance ended.
func (p *LifecycleProxy) Completion(instanceID string) (Completion, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked()
	c, ok := p.completions[instanceID]
	return c, ok
}

// Heartbeats returns how many heartbeats for the instance succeeded.
func (p *LifecycleProxy) Heartbeats(instanceID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heartbeats[instanceID]
}

// Active says whether the instance has an active lifecycle action.
func (p *LifecycleProxy) Active(instanceID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked()
	for k := range p.actions {
		if k.instance == instanceID {
			return true
		}
	}
	return false
}

// protocol is how a request is encoded.
type protocol int

const (
	protoOther       protocol = iota // forwarded untouched
	protoAutoScaling                 // awsQuery, Version 2011-01-01
	protoEC2                         // ec2Query, Version 2016-11-15
	protoSQSJSON                     // awsJson1_0 with X-Amz-Target AmazonSQS.*
)

// request is what the proxy understood of an incoming request.
type request struct {
	proto  protocol
	action string
	params url.Values
}

// ServeHTTP answers the two lifecycle calls and injected faults, and
// forwards everything else to moto.
func (p *LifecycleProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := parseRequest(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.action != "" {
		p.mu.Lock()
		p.requests[req.action]++
		p.mu.Unlock()
	}
	if req.proto != protoOther {
		if f, ok := p.takeFault(req); ok {
			writeError(w, req.proto, f.status, f.code, faultMessage(req, f.code))
			return
		}
	}
	if req.proto == protoAutoScaling {
		switch req.action {
		case ActionCompleteLifecycleAction, ActionRecordLifecycleActionHeartbeat:
			p.lifecycle(w, req)
			return
		}
	}
	if req.proto == protoSQSJSON && req.action == "ChangeMessageVisibility" && p.limitingInFlight() && p.overLimit(w, r) {
		return
	}
	if p.forward == nil {
		http.Error(w, p.upstreamErr.Error(), http.StatusBadGateway)
		return
	}
	p.forward.ServeHTTP(w, r)
}

// parseRequest classifies r, reading a form body and putting it back for
// forwarding.
func parseRequest(w http.ResponseWriter, r *http.Request) (request, error) {
	if t := r.Header.Get("X-Amz-Target"); strings.HasPrefix(t, sqsTargetPrefix) {
		return request{proto: protoSQSJSON, action: strings.TrimPrefix(t, sqsTargetPrefix)}, nil
	}
	params := r.URL.Query()
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); r.Method == http.MethodPost && mt == "application/x-www-form-urlencoded" {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			return request{}, fmt.Errorf("reading the request body: %w", err)
		}
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return request{}, fmt.Errorf("parsing the form body: %w", err)
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	req := request{action: params.Get("Action"), params: params}
	if req.action == "" {
		return req, nil
	}
	switch params.Get("Version") {
	case autoScalingVersion:
		req.proto = protoAutoScaling
	case ec2Version:
		req.proto = protoEC2
	}
	return req, nil
}

// takeFault consumes one injected fault for the request's action, and
// records the call.
func (p *LifecycleProxy) takeFault(req request) (fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.faults[req.action]
	if len(q) == 0 {
		return fault{}, false
	}
	f := *q[0]
	if q[0].remaining--; q[0].remaining == 0 {
		p.faults[req.action] = q[1:]
	}
	c := newCall(req)
	c.At, c.Status, c.ErrorCode, c.Injected = p.clock.Now(), f.status, f.code, true
	p.calls = append(p.calls, c)
	return f, true
}

// newCall records the lifecycle parameters of req.
func newCall(req request) Call {
	return Call{
		Action:     req.action,
		GroupName:  req.params.Get("AutoScalingGroupName"),
		HookName:   req.params.Get("LifecycleHookName"),
		InstanceID: req.params.Get("InstanceId"),
		Token:      req.params.Get("LifecycleActionToken"),
		Result:     req.params.Get("LifecycleActionResult"),
	}
}

// lifecycle answers CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat.
func (p *LifecycleProxy) lifecycle(w http.ResponseWriter, req request) {
	c := newCall(req)
	p.mu.Lock()
	c.At = p.clock.Now()
	code, msg := p.applyLocked(c, req.params)
	c.Status = http.StatusOK
	if code != "" {
		c.Status, c.ErrorCode = http.StatusBadRequest, code
	}
	p.calls = append(p.calls, c)
	p.mu.Unlock()

	if code != "" {
		writeError(w, protoAutoScaling, http.StatusBadRequest, code, msg)
		return
	}
	writeXML(w, http.StatusOK, fmt.Sprintf(
		`<%[1]sResponse xmlns="%[2]s"><%[1]sResult/><ResponseMetadata><RequestId>%[3]s</RequestId></ResponseMetadata></%[1]sResponse>`,
		c.Action, autoScalingXMLNS, newUUID()))
}

// applyLocked validates a lifecycle call and applies it to the active
// actions. It returns the error code and message, or "" on success.
func (p *LifecycleProxy) applyLocked(c Call, params url.Values) (code, msg string) {
	required := []struct{ param, member string }{
		{"AutoScalingGroupName", "autoScalingGroupName"},
		{"LifecycleHookName", "lifecycleHookName"},
	}
	if c.Action == ActionCompleteLifecycleAction {
		required = append(required, struct{ param, member string }{"LifecycleActionResult", "lifecycleActionResult"})
	}
	for _, r := range required {
		if !params.Has(r.param) {
			return "ValidationError", fmt.Sprintf(
				"1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", r.member)
		}
		if params.Get(r.param) == "" {
			return "ValidationError", fmt.Sprintf(
				"1 validation error detected: Value '' at '%s' failed to satisfy constraint: Member must have length greater than or equal to 1", r.member)
		}
	}
	if c.Action == ActionCompleteLifecycleAction && c.Result != ResultContinue && c.Result != ResultAbandon {
		return "ValidationError", fmt.Sprintf(
			"Invalid LifecycleActionResult %q: it must be %s or %s", c.Result, ResultContinue, ResultAbandon)
	}
	if c.InstanceID == "" && c.Token == "" {
		return "ValidationError", "Either InstanceId or LifecycleActionToken must be specified"
	}

	p.expireLocked()
	key, a := p.findLocked(c)
	if a == nil {
		if c.InstanceID != "" {
			return "ValidationError", "No active Lifecycle Action found with instance ID " + c.InstanceID
		}
		return "ValidationError", "No active Lifecycle Action found with token " + c.Token
	}
	switch c.Action {
	case ActionRecordLifecycleActionHeartbeat:
		a.lastHeartbeat = c.At
		p.heartbeats[a.InstanceID]++
	case ActionCompleteLifecycleAction:
		delete(p.actions, key)
		p.completions[a.InstanceID] = Completion{Result: c.Result, Token: a.Token, Source: SourceAPI, At: c.At}
	}
	return "", ""
}

// findLocked returns the active action a call names: by group, hook and
// instance (and token, if given), or by group, hook and token.
func (p *LifecycleProxy) findLocked(c Call) (actionKey, *action) {
	if c.InstanceID != "" {
		k := actionKey{c.GroupName, c.HookName, c.InstanceID}
		a := p.actions[k]
		if a == nil || (c.Token != "" && c.Token != a.Token) {
			return k, nil
		}
		return k, a
	}
	for k, a := range p.actions {
		if k.group == c.GroupName && k.hook == c.HookName && a.Token == c.Token {
			return k, a
		}
	}
	return actionKey{}, nil
}

// expireLocked ends the actions whose heartbeat timeout or global timeout
// has passed, with their default result.
func (p *LifecycleProxy) expireLocked() {
	now := p.clock.Now()
	for k, a := range p.actions {
		if a.HeartbeatTimeout <= 0 {
			continue
		}
		deadline := a.lastHeartbeat.Add(a.HeartbeatTimeout)
		if global := a.started.Add(min(globalTimeoutFactor*a.HeartbeatTimeout, maxGlobalTimeout)); global.Before(deadline) {
			deadline = global
		}
		if now.Before(deadline) {
			continue
		}
		delete(p.actions, k)
		p.completions[a.InstanceID] = Completion{Result: a.DefaultResult, Token: a.Token, Source: SourceTimeout, At: deadline}
	}
}

// faultMessage is the message of an injected error for req.
func faultMessage(req request, code string) string {
	switch code {
	case "ValidationError":
		if req.action != ActionCompleteLifecycleAction && req.action != ActionRecordLifecycleActionHeartbeat {
			break
		}
		if t := req.params.Get("LifecycleActionToken"); t != "" {
			return "No active Lifecycle Action found with token " + t
		}
		return "No active Lifecycle Action found with instance ID " + req.params.Get("InstanceId")
	case "Throttling", "ThrottlingException", "RequestLimitExceeded":
		return "Rate exceeded"
	case "InternalFailure", "InternalError", "ServiceUnavailable":
		return "We encountered an internal error. Please try again."
	}
	return "Injected fault " + code
}

// writeError writes an error in the request's protocol.
func writeError(w http.ResponseWriter, proto protocol, status int, code, msg string) {
	fault := "Sender"
	if status >= 500 {
		fault = "Receiver"
	}
	id := newUUID()
	switch proto {
	case protoSQSJSON:
		b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.sqs#" + code, "message": msg})
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("X-Amzn-Query-Error", code+";"+fault)
		w.Header().Set("X-Amzn-RequestId", id)
		w.WriteHeader(status)
		w.Write(b) //nolint:errcheck // the client may be gone
	case protoEC2:
		writeXML(w, status, fmt.Sprintf(
			`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
				`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
			escape(code), escape(msg), id))
	default:
		writeXML(w, status, fmt.Sprintf(
			`<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			autoScalingXMLNS, fault, escape(code), escape(msg), id))
	}
}

// writeXML writes an XML answer.
func writeXML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	io.WriteString(w, body) //nolint:errcheck // the client may be gone
}

// escape escapes s for XML character data as AWS does: &, < and > only
// (xml.EscapeText would also turn quotes into &#39; and &#34;).
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// newUUID returns a random (version 4) UUID, as Auto Scaling's tokens and
// request IDs are.
func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
