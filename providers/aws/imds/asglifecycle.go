package imds

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// asgLifecyclePath answers, in plain text, the lifecycle state Auto Scaling
// is moving the instance to, and 404 when it is not in a group.
const asgLifecyclePath = "autoscaling/target-lifecycle-state"

// asgTargetState says whether a target state Auto Scaling documents means
// the instance is going away; known is false for any other string.
func asgTargetState(state string) (terminating, known bool) {
	switch state {
	case "InService", "Standby", "Detached", "Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated":
		return false, true
	case "Terminated", "Warmed:Terminated":
		return true, true
	}
	return false, false
}

// parseASGLifecycle reads a target lifecycle state and says whether it
// means termination.
func parseASGLifecycle(body []byte) (state string, terminating bool, err error) {
	state = strings.TrimSpace(string(body))
	terminating, known := asgTargetState(state)
	if !known {
		return "", false, malformed(asgLifecyclePath, body, "unknown target lifecycle state %q", excerpt(state))
	}
	return state, terminating, nil
}

// asgLifecyclePoller remembers when termination was first seen, so that
// every read of one termination reports the same deadline.
type asgLifecyclePoller struct {
	client   MetadataGetter
	deadline time.Duration
	clk      clock.Clock
	// lookup, when set, gives the deadline (see Options.ASGDeadline).
	lookup func(ctx context.Context) (time.Duration, error)
	log    *slog.Logger

	mu        sync.Mutex
	firstSeen time.Time
	// window is the deadline's distance from firstSeen for the current
	// termination.
	window time.Duration
}

func newASGLifecyclePoller(c MetadataGetter, deadline time.Duration, clk clock.Clock) *asgLifecyclePoller {
	return &asgLifecyclePoller{client: c, deadline: deadline, clk: clk}
}

// withDeadline has the poller ask lookup, when not nil, for the deadline
// of each termination.
func (p *asgLifecyclePoller) withDeadline(lookup func(ctx context.Context) (time.Duration, error), log *slog.Logger) *asgLifecyclePoller {
	p.lookup, p.log = lookup, log
	return p
}

// poll is the signal's PollFunc: a terminating state drains, by the
// configured deadline after it was first seen (none if that is zero).
func (p *asgLifecyclePoller) poll(ctx context.Context) ([]interruption.Event, error) {
	body, found, err := fetch(ctx, p.client, asgLifecyclePath)
	if err != nil || !found {
		return nil, err
	}
	state, terminating, err := parseASGLifecycle(body)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !terminating {
		p.firstSeen = time.Time{}
		return nil, nil
	}
	if p.firstSeen.IsZero() {
		p.firstSeen = p.clk.Now()
		p.window = p.deadline
		if p.lookup != nil {
			// Asked once per termination, while the poll holds the lock:
			// the next read waits for it rather than asking again.
			switch w, err := p.lookup(ctx); {
			case err != nil:
				p.log.Warn("the lifecycle hooks' timeout is unknown; draining to --asg-termination-deadline", "err", err, "deadline", p.deadline)
			case w > 0:
				p.window = w
			}
		}
	}
	e := interruption.Event{
		ID:       interruption.NewID(interruption.KindASGTermination, state),
		Kind:     interruption.KindASGTermination,
		Action:   interruption.ActionDrain,
		Observed: p.firstSeen,
		Detail:   fmt.Sprintf("auto scaling target-lifecycle-state %s", state),
	}
	if p.window > 0 {
		e.Deadline = p.firstSeen.Add(p.window)
	}
	return []interruption.Event{e}, nil
}
