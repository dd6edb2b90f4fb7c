package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// An ASG terminate hook: the node is drained while a PDB holds it up, with
// heartbeats sent meanwhile; the lifecycle action is completed with
// CONTINUE and the right token; the message is deleted.
func TestQueueTerminateHookDrainsAndCompletes(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)
	p := e.startProcessor(t, "replica-a")

	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/asg-termination") })
	eventually(t, "heartbeats while the PDB blocks the drain", func() bool {
		return e.proxy.Heartbeats(m.instance) >= 2 && p.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"}) >= 1
	})
	if _, done := e.proxy.Completed(m.instance); done {
		t.Fatal("lifecycle action completed before the drain finished")
	}
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	c, _ := e.proxy.Completion(m.instance)
	if c.Result != "CONTINUE" || c.Token != m.token {
		t.Fatalf("completion %+v, want CONTINUE with token %s", c, m.token)
	}
	eventually(t, "the message deleted", func() bool {
		return e.depth(t) == 0 && p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 1
	})
	for _, mt := range []struct {
		name   string
		labels map[string]string
	}{
		{"lastcall_queue_messages_received_total", map[string]string{"kind": "asg-terminate"}},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"result": "CONTINUE", "outcome": "success"}},
		{"lastcall_queue_lag_seconds", nil},
		{"lastcall_drain_duration_seconds", map[string]string{"kind": "asg-termination", "result": "success"}},
	} {
		if got := p.metric(t, mt.name, mt.labels); got != 1 {
			t.Errorf("%s%v = %v, want 1", mt.name, mt.labels, got)
		}
	}
	if got := p.metric(t, "lastcall_lifecycle_heartbeats_total", map[string]string{"outcome": "success"}); got < 2 {
		t.Errorf("heartbeats metric %v, want at least 2", got)
	}
	waitEvents(t, "default", m.node, "InterruptionNotice", "DrainStarted", "DrainCompleted")
}
