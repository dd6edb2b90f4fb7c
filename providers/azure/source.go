package azure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/provider"
)

// Sources returns the scheduled events source, named SourceName: an
// interruption.Poller whose drain notices may be approved once the node is
// drained (see Completer). client nil
// means provider.MetadataHTTPClient (no proxy); health, log and clk may be nil (discarded,
// slog.Default, the real clock).
func Sources(client *http.Client, o Options, health interruption.HealthReporter, log *slog.Logger, clk clock.Clock) ([]interruption.Source, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		client = provider.MetadataHTTPClient(readTimeout)
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if log == nil {
		log = slog.Default()
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	s := &source{
		client: newClient(client, o.Endpoint),
		opts:   o,
		log:    log.With("source", SourceName, "vm", o.VMName),
		clk:    clk,
		listed: map[string]notice{},
	}
	s.unknown = newUnknowns(health, log)
	s.poller = &interruption.Poller{
		SourceName: SourceName,
		Poll:       s.poll,
		Interval:   o.Interval,
		Health:     health,
		Log:        log,
		Clock:      clk,
	}
	return []interruption.Source{s}, nil
}

// source is the Poller of the scheduled events plus what Acknowledge needs:
// the events listed at the last good read, by lastcall event ID.
type source struct {
	poller *interruption.Poller
	client *client
	opts   Options
	log    *slog.Logger
	clk    clock.Clock

	// unknown reports the values of the document lastcall does not know.
	unknown *health.Unknowns

	mu     sync.Mutex
	listed map[string]notice
}

var _ interruption.Source = (*source)(nil)

// Name implements interruption.Source.
func (s *source) Name() string { return s.poller.Name() }

// Run implements interruption.Source.
func (s *source) Run(ctx context.Context, out chan<- interruption.Event) error {
	return s.poller.Run(ctx, out)
}

// poll is the PollFunc: the events listed now for this VM, and a cancel
// for each one listed at the last good read that is gone.
func (s *source) poll(ctx context.Context) ([]interruption.Event, error) {
	body, err := s.client.get(ctx)
	if err != nil {
		return nil, err
	}
	notices, unknown, err := parseDocument(body, s.opts.VMName, s.opts.DrainFreeze, s.clk.Now())
	if err != nil {
		return nil, err
	}
	s.unknown.Report(unknown)
	now := make(map[string]notice, len(notices))
	events := make([]interruption.Event, 0, len(notices))
	for _, n := range notices {
		now[n.event.ID] = n
		events = append(events, n.event)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for id := range s.listed {
		if _, ok := now[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		old := s.listed[id]
		events = append(events, interruption.Event{
			ID:     id,
			Kind:   old.event.Kind,
			Action: interruption.ActionCancel,
			Detail: fmt.Sprintf("azure scheduled event %s is no longer listed", old.eventID),
		})
	}
	s.listed = now
	return events, nil
}

// Completer gives a drain notice its completer when Options.Acknowledge
// is set: once the node is drained, the event is approved (Acknowledge).
func (s *source) Completer(ev interruption.Event) episode.Completer {
	if !s.opts.Acknowledge || ev.Action != interruption.ActionDrain {
		return nil
	}
	return approval{s: s, ev: ev}
}

// approval approves an event once the drain for it has finished.
type approval struct {
	s  *source
	ev interruption.Event
}

func (approval) Name() string                  { return "azure-approval" }
func (approval) KeepAlive(ctx context.Context) {}

// Complete approves the event if the node was drained; otherwise the
// platform starts it at its NotBefore.
func (a approval) Complete(ctx context.Context, o drain.Outcome) error {
	if !o.Finished() {
		a.s.log.Info("not approving the event: the drain did not finish", "event", a.ev.ID, "outcome", o.Label())
		return nil
	}
	return a.s.Acknowledge(ctx, a.ev)
}

// Acknowledge: with Options.Acknowledge it approves ev's Azure event (StartRequests), so that
// the platform may start it now; without, it does nothing. It does nothing
// either for an event that is no longer listed or has already Started, and
// it refuses (logging, returning nil) an event that names VMs other than
// this one, since approving it would start it for them too.
func (s *source) Acknowledge(ctx context.Context, ev interruption.Event) error {
	if !s.opts.Acknowledge {
		return nil
	}
	if ev.Source != "" && ev.Source != SourceName {
		return fmt.Errorf("azure: cannot acknowledge event %s of source %q", ev.ID, ev.Source)
	}
	if ev.Action == interruption.ActionCancel {
		return errors.New("azure: cannot acknowledge a cancel")
	}
	s.mu.Lock()
	n, ok := s.listed[ev.ID]
	s.mu.Unlock()
	log := s.log.With("event", ev.ID)
	switch {
	case !ok:
		log.Info("event no longer listed, nothing to acknowledge")
		return nil
	case n.started:
		log.Debug("event already started, nothing to acknowledge", "event_id", n.eventID)
		return nil
	case !s.onlyThisVM(n.resources):
		log.Warn("not acknowledging an event that also names other VMs", "event_id", n.eventID, "resources", n.resources)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	if err := s.client.start(ctx, n.eventID); err != nil {
		return fmt.Errorf("azure: acknowledging event %s: %w", n.eventID, err)
	}
	log.Info("acknowledged event", "event_id", n.eventID)
	return nil
}

// onlyThisVM says whether resources name this VM alone: exactly one
// resource, VMName.
func (s *source) onlyThisVM(resources []string) bool {
	return len(resources) == 1 && strings.EqualFold(resources[0], s.opts.VMName)
}
