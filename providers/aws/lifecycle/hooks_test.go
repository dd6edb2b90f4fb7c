package lifecycle_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// A hook's global timeout, as Auto Scaling describes it through moto: 100
// times its heartbeat timeout, at most 48 hours; a hook the group does not
// have is an error.
func TestHookGlobalTimeout(t *testing.T) {
	ctx := context.Background()
	cfg := moto.Config(motoURL)
	group := fmt.Sprintf("asg-hooks-%d", time.Now().UnixNano()%1_000_000_000)
	if _, err := moto.CreateGroup(ctx, cfg, moto.Group{Name: group, Size: 1, Hooks: []moto.Hook{
		{Name: "short", HeartbeatTimeout: 300 * time.Second},
		{Name: "default"},
	}}); err != nil {
		t.Fatal(err)
	}
	hooks := lifecycle.NewHooks(autoscaling.NewFromConfig(cfg))
	for hook, want := range map[string]time.Duration{"short": 30000 * time.Second, "default": 48 * time.Hour} {
		got, err := hooks.GlobalTimeout(ctx, group, hook)
		if err != nil || got != want {
			t.Errorf("hook %s: %s, %v; want %s", hook, got, err, want)
		}
	}
	if got, err := hooks.GlobalTimeout(ctx, group, "none"); err == nil {
		t.Errorf("a hook the group lacks: %s, want an error", got)
	}
	if lifecycle.ShortestGlobalTimeout != 50*time.Minute {
		t.Errorf("shortest global timeout %s, want 50m (100 × 30 s)", lifecycle.ShortestGlobalTimeout)
	}
}
