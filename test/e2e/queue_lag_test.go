package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The lag from an event to its message is measured on the message's first
// receive only: a message received again (its replica stopped while its
// node drained, say) arrives late by then for a reason that is not the
// queue's, and would make LastcallQueueLagHigh fire on ordinary retries.
func TestQueueLagCountsTheFirstReceiveOnly(t *testing.T) {
	e := newAWSEnv(t)
	m, _ := e.guardedHook(t)
	a := e.startProcessor(t, "lag-a")
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	if got := a.metric(t, "lastcall_queue_lag_seconds", nil); got != 1 {
		t.Fatalf("lag observed %v times on the first receive, want 1", got)
	}
	// A stops mid-drain; the message reappears for B.
	a.stop()
	b := e.startProcessor(t, "lag-b")
	eventually(t, "the message received again", func() bool {
		return b.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": "asg-terminate"}) == 1
	})
	if got := b.metric(t, "lastcall_queue_lag_seconds", nil); got != 0 {
		t.Errorf("lag observed %v times on a second receive, want 0", got)
	}
}
