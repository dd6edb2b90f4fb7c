package e2e

import (
	"context"
	"testing"

	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// A launch hook whose node takes a while to join: the processor waits with
// the message in flight, its visibility extended, rather than release it
// to be received again, since every receive counts toward the queue's
// redrive limit (commonly 3 to 5), after which the hook would be
// dead-lettered and the instance left to the hook's default result. On a
// queue that dead-letters past 3 receives, the action is completed once,
// the message received at most twice, and nothing dead-lettered.
func TestQueueLaunchHookWaitsInFlight(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	dlq, err := moto.DeadLetter(ctx, e.sqs, e.queueURL, 3)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := e.launchHook(t, "asg-inflight")
	p := e.startProcessor(t, "inflight") // --retry-after=1s, --visibility-timeout=6s
	tries := func() float64 {
		return p.metric(t, "lastcall_queue_waits_total", map[string]string{"reason": "node-not-joined"}) +
			p.metric(t, "lastcall_queue_messages_released_total", map[string]string{"reason": "node-not-joined"})
	}
	eventually(t, "eight looks for the node", func() bool { return tries() >= 8 })
	if _, done := e.proxy.Completed(id); done {
		t.Fatal("launch action completed before the node joined")
	}
	if _, err := env.AddNode(ctx, "ip-"+id, cluster.WithProviderID("aws:///"+moto.Region+"a/"+id)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the launch action completed and the message deleted", func() bool {
		_, ok := e.proxy.Completed(id)
		return ok && e.depth(t) == 0
	})
	if n := e.proxy.Requests("CompleteLifecycleAction"); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	if n := p.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": "asg-launch"}); n > 2 {
		t.Errorf("the launch message was received %v times while its node joined, want at most 2", n)
	}
	if n, err := moto.QueueDepth(ctx, e.sqs, dlq); err != nil || n != 0 {
		t.Errorf("%d messages dead-lettered (%v), want none", n, err)
	}
	if n := p.metric(t, "lastcall_queue_visibility_extensions_total", nil); n < 1 {
		t.Errorf("%v visibility extensions while waiting, want some", n)
	}
}
