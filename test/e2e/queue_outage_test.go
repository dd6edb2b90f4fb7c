package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/emulators/moto"
)

// The API server is stopped for 2 minutes. A terminate lifecycle hook
// arrives as it stops and a spot interruption a minute later, on a queue
// whose redrive policy dead-letters a message past its third receive. The
// processor cannot take the nodes' Leases meanwhile, yet dead-letters
// nothing: on each message's last spare receive it sends a fresh copy of
// it (lastcall_queue_messages_requeued_total), and once the API server is
// back, both nodes are drained, the lifecycle action is completed once,
// and both messages are deleted as processed.
func TestQueueAPIServerOutageDeadLettersNothing(t *testing.T) {
	const outage = 2 * time.Minute
	e := newAWSEnv(t)
	ctx := context.Background()
	dlq, err := moto.DeadLetter(ctx, e.sqs, e.queueURL, 3)
	if err != nil {
		t.Fatal(err)
	}
	ms := e.group(t, 2, nil)
	hooked, spot := ms[0], ms[1]
	p, api := e.startProcessorVia(t, "outage")

	api.down()
	stopped := time.Now()
	back := time.After(outage)
	e.send(t, terminateHook(hooked))
	requeued := func() float64 {
		return p.metric(t, "lastcall_queue_messages_requeued_total", map[string]string{"reason": "lease-failed"})
	}
	eventually(t, "a fresh copy of the hook's message", func() bool { return requeued() >= 1 })

	select {
	case <-time.After(time.Until(stopped.Add(outage / 2))):
	case <-back:
	}
	e.send(t, spotWarning(spot.instance))
	eventually(t, "a fresh copy of the spot message too", func() bool {
		return p.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": "spot-interruption"}) >= 2 &&
			p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "requeued"}) >= 2 &&
			requeued() >= 2 && e.depth(t) == 2
	})
	<-back
	api.up()
	t.Logf("API server back after %s", time.Since(stopped).Round(time.Second))

	for _, m := range ms {
		waitNode(t, m.node, func(n *corev1.Node) bool { return drainedNode(n) })
	}
	eventually(t, "the lifecycle action completed and both messages deleted", func() bool {
		_, ok := e.proxy.Completed(hooked.instance)
		return ok && e.depth(t) == 0
	})
	t.Logf("both nodes drained, the action completed and the queue empty %s after the API server came back", time.Since(stopped.Add(outage)).Round(100*time.Millisecond))
	if c, _ := e.proxy.Completion(hooked.instance); c.Result != moto.ResultContinue || c.Source != moto.SourceAPI {
		t.Errorf("lifecycle action ended %+v, want CONTINUE by lastcall", c)
	}
	if n := e.proxy.Requests(moto.ActionCompleteLifecycleAction); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	if n, err := moto.QueueDepth(ctx, e.sqs, dlq); err != nil || n != 0 {
		t.Errorf("%d messages dead-lettered (%v), want none", n, err)
	}
	if n := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}); n != 2 {
		t.Errorf("%v messages deleted as processed, want 2", n)
	}
	if n := p.metric(t, "lastcall_queue_messages_released_total", map[string]string{"reason": "redrive"}); n != 0 {
		t.Errorf("%v messages left to the redrive policy, want none", n)
	}
}
