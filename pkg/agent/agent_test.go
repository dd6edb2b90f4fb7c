package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
)

// slowEpisodes reads the node's holds as slowly as an API server that does
// not answer: ReleaseStale waits until its context ends.
type slowEpisodes struct {
	releasing chan struct{} // closed once ReleaseStale was called
	added     chan episode.Notice
}

func (e *slowEpisodes) Add(_ string, n episode.Notice) (*episode.Ticket, error) {
	e.added <- n
	return nil, nil
}

func (e *slowEpisodes) Withdraw(string, interruption.Event) error { return nil }

func (e *slowEpisodes) ReleaseStale(ctx context.Context, _ string) error {
	close(e.releasing)
	<-ctx.Done()
	return ctx.Err()
}

// While the holds of the node are read, however long the API server takes,
// the main loop still answers liveness pings and takes notices.
func TestLoopAnswersWhileHoldsAreRead(t *testing.T) {
	eps := &slowEpisodes{releasing: make(chan struct{}), added: make(chan episode.Notice, 1)}
	pings := make(chan chan struct{})
	in := make(chan interruption.Event)
	a := New(Options{Node: "n", Pings: pings}, eps, record.NewFakeRecorder(10), prometheus.NewRegistry(), slog.New(slog.DiscardHandler), clock.RealClock{})
	synced := make(chan struct{})
	close(synced)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, []interruption.Source{chanSource(in)}, synced) }()

	select {
	case <-eps.releasing:
	case <-time.After(10 * time.Second):
		t.Fatal("the stale holds were never read")
	}
	for range 3 {
		reply := make(chan struct{})
		select {
		case pings <- reply:
		case <-time.After(10 * time.Second):
			t.Fatal("the loop takes no ping while the holds are read")
		}
		select {
		case <-reply:
		case <-time.After(10 * time.Second):
			t.Fatal("the loop does not answer a ping while the holds are read")
		}
	}
	in <- interruption.Event{ID: "spot", Source: "test", Kind: interruption.KindSpotInterruption, Action: interruption.ActionDrain}
	select {
	case n := <-eps.added:
		if n.Event.ID != "spot" {
			t.Errorf("notice %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the loop takes no notice while the holds are read")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// chanSource forwards what the test sends.
type chanSource chan interruption.Event

func (c chanSource) Name() string { return "test" }

func (c chanSource) Run(ctx context.Context, out chan<- interruption.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-c:
			select {
			case out <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
