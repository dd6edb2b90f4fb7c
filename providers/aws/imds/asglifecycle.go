package imds

import (
	"context"
	"fmt"
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

	mu        sync.Mutex
	firstSeen time.Time
}

func newASGLifecyclePoller(c MetadataGetter, deadline time.Duration, clk clock.Clock) *asgLifecyclePoller {
	return &asgLifecyclePoller{client: c, deadline: deadline, clk: clk}
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
	}
	e := interruption.Event{
		ID:       interruption.NewID(interruption.KindASGTermination, state),
		Kind:     interruption.KindASGTermination,
		Action:   interruption.ActionDrain,
		Observed: p.firstSeen,
		Detail:   fmt.Sprintf("auto scaling target-lifecycle-state %s", state),
	}
	if p.deadline > 0 {
		e.Deadline = p.firstSeen.Add(p.deadline)
	}
	return []interruption.Event{e}, nil
}
