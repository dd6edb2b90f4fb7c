package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
)

// A lifecycle hook's global timeout is how long heartbeats can keep one of
// its actions alive: 100 times its heartbeat timeout, at most 48 hours.
const (
	maxGlobalTimeout         = 48 * time.Hour
	globalTimeoutFactor      = 100
	defaultHeartbeatTimeout  = time.Hour
	minHeartbeatTimeoutOfAWS = 30 * time.Second
)

// ShortestGlobalTimeout is the global timeout of a hook with the shortest
// heartbeat timeout Auto Scaling allows (30 s): no lifecycle action can be
// kept alive for less.
const ShortestGlobalTimeout = globalTimeoutFactor * minHeartbeatTimeoutOfAWS

// DescribeAPI is the part of the Auto Scaling client Hooks uses.
type DescribeAPI interface {
	DescribeLifecycleHooks(ctx context.Context, in *autoscaling.DescribeLifecycleHooksInput,
		optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error)
}

// Hooks reads lifecycle hooks' global timeouts, each once.
type Hooks struct {
	api DescribeAPI
	mu  sync.Mutex
	// known are global timeouts by group and hook; a hook is not
	// changed often, and a changed one applies to new actions only.
	known map[[2]string]time.Duration
}

// NewHooks returns Hooks calling api.
func NewHooks(api DescribeAPI) *Hooks { return &Hooks{api: api, known: map[[2]string]time.Duration{}} }

// GlobalTimeoutOf is how long heartbeats can keep an action of lh alive.
// Auto Scaling reports GlobalTimeout; it is the smaller of 48 h and 100
// heartbeat timeouts, which is computed too, for a description that leaves
// it out or gets it wrong.
func GlobalTimeoutOf(lh types.LifecycleHook) time.Duration {
	hb := defaultHeartbeatTimeout
	if s := aws.ToInt32(lh.HeartbeatTimeout); s > 0 {
		hb = time.Duration(s) * time.Second
	}
	d := min(maxGlobalTimeout, globalTimeoutFactor*hb)
	if g := aws.ToInt32(lh.GlobalTimeout); g > 0 {
		d = min(d, time.Duration(g)*time.Second)
	}
	return d
}

// GlobalTimeout is how long heartbeats can keep an action of the group's
// hook alive, as Auto Scaling describes the hook.
func (h *Hooks) GlobalTimeout(ctx context.Context, group, hook string) (time.Duration, error) {
	key := [2]string{group, hook}
	h.mu.Lock()
	d, ok := h.known[key]
	h.mu.Unlock()
	if ok {
		return d, nil
	}
	out, err := h.api.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{
		AutoScalingGroupName: &group, LifecycleHookNames: []string{hook},
	})
	if err != nil {
		return 0, fmt.Errorf("describing lifecycle hook %s of group %s: %w", hook, group, err)
	}
	for _, lh := range out.LifecycleHooks {
		if aws.ToString(lh.LifecycleHookName) != hook {
			continue
		}
		d := GlobalTimeoutOf(lh)
		h.mu.Lock()
		h.known[key] = d
		h.mu.Unlock()
		return d, nil
	}
	return 0, fmt.Errorf("group %s has no lifecycle hook %s", group, hook)
}
