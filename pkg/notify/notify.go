// Package notify sends optional webhook notifications: one when an
// interruption of a node is received, one when its drain finishes. The
// body is a built-in payload (Slack, Microsoft Teams, or the Notification
// as JSON) or a user's JSON template with ${field} placeholders.
// Notifications are queued and delivered off the drain's path, and
// deduplicated by instance (or node) and phase, so several signals about
// one instance give one notification of each phase.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/version"
)

// Phase is the point of an interruption a notification tells of.
type Phase string

const (
	// PhaseReceived: a notice was received and the node held (cordoned,
	// and drained if the notice asks).
	PhaseReceived Phase = "received"
	// PhaseFinished: the node's drain ended (Result says how).
	PhaseFinished Phase = "finished"
)

// Notification is what a webhook is told. Fields that do not apply are
// zero. Its JSON form (see MarshalJSON) is the json payload, and its keys
// are a template's placeholders: a new field needs a json tag, no more
// (a duration, or a time that may be unknown, also a line in MarshalJSON).
type Notification struct {
	Phase Phase `json:"phase"`
	// Node is the node's name.
	Node string `json:"node"`
	// Instance is the cloud instance ID, when known.
	Instance string `json:"instance"`
	// Kind is the interruption's kind, e.g. spot-interruption.
	Kind string `json:"kind"`
	// Action is what the notice asks: cordon or drain.
	Action string `json:"action"`
	// Source is the signal's source, e.g. imds-spot or sqs.
	Source string `json:"source"`
	// Detail is a short human description of the notice.
	Detail string `json:"detail"`
	// Deadline is when the node goes; zero when unknown.
	Deadline time.Time `json:"deadline"`
	// Result says how the drain ended (finished phase): success, timeout,
	// failure or dry_run.
	Result string `json:"result"`
	// Evicted is the number of pods evicted (finished phase).
	Evicted int `json:"evicted"`
	// Remaining is the number of pods left when the drain ended early
	// (finished phase).
	Remaining int `json:"remaining"`
	// Took is the drain's duration (finished phase).
	Took time.Duration `json:"took_seconds"`
	// Time is when lastcall notified; Notify sets it when zero.
	Time time.Time `json:"time"`
	// Mode is lastcall's mode: agent or queue.
	Mode string `json:"mode"`
	// Cluster is Options.Cluster; Notify sets it when empty.
	Cluster string `json:"cluster"`
}

// Key is what notifications are deduplicated on, with their phase: the
// instance when known, else the node. Forget takes it.
func (m Notification) Key() string {
	if m.Instance != "" {
		return m.Instance
	}
	return m.Node
}

const (
	// DefaultTimeout bounds each attempt when Options.Timeout is zero.
	DefaultTimeout = 5 * time.Second
	// DefaultDedupeWindow is the dedupe window when Options.DedupeWindow is
	// zero: longer than any drain, short enough to keep memory bounded.
	DefaultDedupeWindow = time.Hour
	// QueueSize is how many notifications wait for delivery at most; more
	// are dropped, never waited for.
	QueueSize = 64
	// FlushTimeout bounds delivering what is queued once Run's ctx ends.
	FlushTimeout = 5 * time.Second

	maxAttempts  = 3
	firstBackoff = time.Second
	// maxWait caps a wait between attempts, Retry-After included.
	maxWait = 15 * time.Second
	// maxPruneEvery paces sweeps of expired dedupe keys.
	maxPruneEvery = time.Minute
)

// Notifier delivers notifications to a webhook. A Notifier built without
// a URL does nothing; its methods are safe for concurrent use.
type Notifier struct {
	url       string // never logged: it often holds a secret
	host      string
	render    func(Notification) ([]byte, error)
	client    *http.Client
	headers   http.Header
	timeout   time.Duration
	cluster   string
	window    time.Duration
	backoff   time.Duration
	flush     time.Duration
	queue     chan Notification
	metrics   *metrics
	log       *slog.Logger
	clock     clock.Clock
	mu        sync.Mutex
	seen      map[dedupeKey]time.Time
	lastPrune time.Time
}

type dedupeKey struct {
	key   string
	phase Phase
}

// CheckURL says why raw is not a webhook URL (an absolute http or https
// URL), without repeating it: it may hold a secret.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an absolute http or https URL; got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("must be an absolute http or https URL; got no host")
	}
	return nil
}

// New returns a Notifier for o, its metrics registered on reg. It fails
// when the URL is not an absolute http or https URL, the format is
// unknown, or the template cannot be read, parsed or rendered to JSON.
// With no URL, the Notifier does nothing (its metrics still exist, at 0).
func New(o Options, reg prometheus.Registerer, log *slog.Logger, clk clock.Clock) (*Notifier, error) {
	render, body, err := o.payload()
	if err != nil {
		return nil, err
	}
	if o.URL != "" {
		if err := CheckURL(o.URL); err != nil {
			return nil, fmt.Errorf("webhook URL: %w", err)
		}
	}
	n := &Notifier{metrics: newMetrics(reg), log: log, clock: clk}
	if o.URL == "" {
		return n, nil
	}
	u, _ := url.Parse(o.URL)
	n.url, n.host, n.render, n.cluster = o.URL, u.Host, render, o.Cluster
	n.timeout = orDefault(o.Timeout, DefaultTimeout)
	n.window = orDefault(o.DedupeWindow, DefaultDedupeWindow)
	n.backoff, n.flush = firstBackoff, FlushTimeout
	n.headers = http.Header{}
	for k, v := range o.Headers {
		n.headers.Set(k, v)
	}
	n.headers.Set("Content-Type", "application/json")
	n.headers.Set("User-Agent", "lastcall/"+version.Version)
	// A redirect would turn the POST into a GET: report it instead.
	n.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	n.queue = make(chan Notification, QueueSize)
	n.seen = map[dedupeKey]time.Time{}
	log.Info("webhook notifications enabled", "host", n.host, "body", body, "timeout", n.timeout, "cluster", o.Cluster)
	return n, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Notify queues m for delivery and returns at once. A repeat of a key and
// phase already notified within the dedupe window is counted and dropped,
// as is m when the queue is full.
func (n *Notifier) Notify(m Notification) {
	if n.queue == nil {
		return
	}
	if m.Phase != PhaseReceived && m.Phase != PhaseFinished {
		n.log.Error("notification with an unknown phase ignored", "phase", m.Phase, "node", m.Node)
		return
	}
	now := n.clock.Now()
	if m.Time.IsZero() {
		m.Time = now
	}
	if m.Cluster == "" {
		m.Cluster = n.cluster
	}
	log := n.log.With("phase", m.Phase, "node", m.Node, "instance", m.Instance, "kind", m.Kind)
	k := dedupeKey{m.Key(), m.Phase}
	n.mu.Lock()
	n.pruneLocked(now)
	if at, ok := n.seen[k]; ok && now.Sub(at) < n.window {
		n.mu.Unlock()
		n.metrics.count(m.Phase, resultDeduplicated)
		log.Debug("notification deduplicated: already notified", "since", now.Sub(at))
		return
	}
	select {
	case n.queue <- m:
		n.seen[k] = now
		n.mu.Unlock()
		log.Debug("notification queued")
	default:
		n.mu.Unlock()
		n.metrics.count(m.Phase, resultDropped)
		log.Warn("notification dropped: delivery queue full", "queue_size", QueueSize)
	}
}

// Forget ends the episode of key (an instance ID, or a node name: see
// Notification.Key): its next notification of either phase is sent again.
// The agent calls it when its node's interruption is withdrawn.
func (n *Notifier) Forget(key string) {
	if n.queue == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.seen, dedupeKey{key, PhaseReceived})
	delete(n.seen, dedupeKey{key, PhaseFinished})
}

// pruneLocked drops the keys older than the window, at most every
// maxPruneEvery (or window, if shorter), so memory stays bounded; Notify
// checks the age of the key at hand itself.
func (n *Notifier) pruneLocked(now time.Time) {
	if now.Sub(n.lastPrune) < min(n.window, maxPruneEvery) {
		return
	}
	n.lastPrune = now
	for k, at := range n.seen {
		if now.Sub(at) >= n.window {
			delete(n.seen, k)
		}
	}
}

// Run delivers queued notifications, one at a time, until ctx ends; it
// then delivers what is still queued for at most FlushTimeout (an attempt
// in flight included) and returns.
func (n *Notifier) Run(ctx context.Context) error {
	if n.queue == nil {
		<-ctx.Done()
		return nil
	}
	// Deliveries outlive ctx by the flush time, so that a notification in
	// flight at shutdown is not cut short at once.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		select {
		case <-dctx.Done():
			return
		case <-ctx.Done():
		}
		t := n.clock.NewTimer(n.flush)
		defer t.Stop()
		select {
		case <-dctx.Done():
		case <-t.C():
			cancel()
		}
	})
	for {
		if ctx.Err() != nil { // first, even with notifications waiting
			n.drain(dctx)
			return nil
		}
		select {
		case <-ctx.Done():
		case m := <-n.queue:
			n.deliver(dctx, m)
		}
	}
}

// drain delivers what is queued until the queue is empty or ctx ends;
// what is left then is dropped.
func (n *Notifier) drain(ctx context.Context) {
	for {
		select {
		case m := <-n.queue:
			if ctx.Err() != nil {
				n.metrics.count(m.Phase, resultDropped)
				n.log.Warn("notification dropped: shutting down", "phase", m.Phase, "node", m.Node, "instance", m.Instance)
				continue
			}
			n.deliver(ctx, m)
		default:
			return
		}
	}
}
