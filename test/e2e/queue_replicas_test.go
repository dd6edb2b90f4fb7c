package e2e

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Two replicas consume one queue that holds two events for every instance
// (a spot warning and a terminate hook): every node is drained, by one
// replica at a time, and every lifecycle action completed exactly once.
func TestQueueTwoReplicasDrainEachNodeOnce(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	members := e.group(t, 6, pool)
	create(t, deployment(ns, "web", 12, pool, 0), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == 12 })
	newNode(t, "spare", pool)
	for _, m := range members {
		e.send(t, spotWarning(m.instance))
		e.send(t, terminateHook(m))
	}
	a := e.startProcessor(t, "replica-a")
	b := e.startProcessor(t, "replica-b")

	for _, m := range members {
		waitNode(t, m.node, drainedNode)
	}
	eventually(t, "every message deleted", func() bool { return e.depth(t) == 0 })
	// Each node's two notices are one episode: drained by one replica,
	// under its Lease. A notice that arrives after its node's pass has
	// ended starts a second pass over it (for what came back since), so a
	// node may be passed over twice, never more.
	drains := a.metric(t, "lastcall_drain_duration_seconds", nil) + b.metric(t, "lastcall_drain_duration_seconds", nil)
	if drains < float64(len(members)) || drains > float64(2*len(members)) {
		t.Errorf("%v drains for %d nodes, want one or two passes each", drains, len(members))
	}
	t.Logf("%v drain passes for %d nodes", drains, len(members))
	for _, m := range members {
		completes := 0
		for _, c := range e.proxy.Calls() {
			if c.Action == "CompleteLifecycleAction" && c.InstanceID == m.instance {
				completes++
			}
		}
		if r, ok := e.proxy.Completed(m.instance); !ok || r != "CONTINUE" || completes != 1 {
			t.Errorf("%s: completed %v (%q) by %d calls, want once with CONTINUE", m.instance, ok, r, completes)
		}
	}
	t.Logf("replica a: %v messages, replica b: %v",
		a.metric(t, "lastcall_queue_messages_deleted_total", nil), b.metric(t, "lastcall_queue_messages_deleted_total", nil))
}

// A replica killed (SIGKILL) in the middle of a drain held up by a PDB:
// its lease expires and its message reappears; the other replica resumes
// the heartbeats, finishes the drain and completes the lifecycle action,
// once, and nothing is lost.
func TestQueueReplicaKilledMidDrain(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)

	victim := e.startProcessorProcess(t, "replica-a")
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	eventually(t, "the first replica's heartbeats", func() bool { return e.proxy.Heartbeats(m.instance) >= 2 })
	victim.Kill()
	before := e.proxy.Heartbeats(m.instance)
	if log, err := os.ReadFile(victim.LogPath); err == nil {
		t.Logf("killed replica's log:\n%s", log)
	}

	b := e.startProcessor(t, "replica-b")
	eventually(t, "the second replica to resume the heartbeats", func() bool { return e.proxy.Heartbeats(m.instance) >= before+2 })
	if _, done := e.proxy.Completed(m.instance); done {
		t.Fatal("lifecycle action completed while the PDB still held the pod")
	}
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed and the message deleted", func() bool {
		_, ok := e.proxy.Completed(m.instance)
		return ok && e.depth(t) == 0
	})
	completes := 0
	for _, c := range e.proxy.Calls() {
		if c.Action == "CompleteLifecycleAction" {
			completes++
		}
	}
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" || c.Token != m.token || completes != 1 {
		t.Fatalf("completion %+v after %d calls, want one CONTINUE with token %s", c, completes, m.token)
	}
	if got := b.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}); got != 1 {
		t.Errorf("the second replica deleted %v messages as processed, want 1", got)
	}
}
