package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/emulators/moto"
)

// On a queue whose redrive policy dead-letters a message past its second
// receive, a terminate lifecycle hook is first received by a replica cut
// off from the API server alone. That replica cannot take the node's
// Lease, and the message is on its last spare receive: it sends a fresh
// copy for any replica to take up (rather than hold the message until it
// reconnects or the message's bound passes), and the healthy replica
// drains the node and completes the lifecycle action. Nothing is
// dead-lettered.
func TestQueueReplicaCutOffAloneHoldsNothing(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	dlq, err := moto.DeadLetter(ctx, e.sqs, e.queueURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := e.group(t, 1, nil)[0]
	a, cable := e.startProcessorVia(t, "replica-a")

	cable.down()
	e.send(t, terminateHook(m))
	eventually(t, "replica a to receive the hook", func() bool {
		return a.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": "asg-terminate"}) >= 1
	})
	sent := time.Now()
	b := e.startProcessor(t, "replica-b")

	waitNode(t, m.node, func(n *corev1.Node) bool { return drainedNode(n) })
	eventually(t, "the lifecycle action completed and the queue empty", func() bool {
		_, ok := e.proxy.Completed(m.instance)
		return ok && e.depth(t) == 0
	})
	t.Logf("replica b drained the node and completed the action %s after a received the hook; a sent %v fresh copies",
		time.Since(sent).Round(100*time.Millisecond), a.metric(t, "lastcall_queue_messages_requeued_total", map[string]string{"reason": "lease-failed"}))
	if c, _ := e.proxy.Completion(m.instance); c.Result != moto.ResultContinue || c.Source != moto.SourceAPI {
		t.Errorf("lifecycle action ended %+v, want CONTINUE by lastcall", c)
	}
	if got := a.metric(t, "lastcall_queue_messages_requeued_total", map[string]string{"reason": "lease-failed"}); got < 1 {
		t.Errorf("replica a sent %v fresh copies for lease-failed, want at least 1", got)
	}
	if got := b.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}); got != 1 {
		t.Errorf("replica b deleted %v messages as processed, want 1", got)
	}
	if n, err := moto.QueueDepth(ctx, e.sqs, dlq); err != nil || n != 0 {
		t.Errorf("%d messages dead-lettered (%v), want none", n, err)
	}
}
