package e2e

import (
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// inFlightLimit stands for SQS's 12 hours in these tests: the proxy
// refuses to keep a message in flight longer, as SQS does, and lastcall is
// told so with --max-in-flight.
const inFlightLimit = 20 * time.Second

// carried reports whether the node's state shows the queue processor's
// hold of the instance's lifecycle action carried by the node alone.
func carried(n *corev1.Node, instance string) bool {
	st, err := node.StateOf(n)
	if err != nil {
		return false
	}
	for _, h := range st.Owned(node.OwnerQueue) {
		if h.Carry != nil && h.Carry.Instance == instance && h.Carry.Step == "asg-lifecycle" && json.Valid(h.Carry.Data) {
			return true
		}
	}
	return false
}

// handedOver waits until the hook's message is deleted as handed over to
// the node, with the pod still guarded on it and heartbeats going on.
func handedOver(t *testing.T, e *awsEnv, p *agent, m member) {
	t.Helper()
	eventually(t, "the message handed over and deleted", func() bool {
		return p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "handed-over"}) == 1 && e.depth(t) == 0
	})
	waitNode(t, m.node, func(n *corev1.Node) bool { return carried(n, m.instance) })
}

// A terminate hook's drain waits on a budget longer than SQS lets its
// message stay in flight. The message is handed over to the node and
// deleted; the drain goes on, with its heartbeats, and once the budget
// allows, the node is drained and the action completed once. No
// extension past the limit is asked for, and the message is received
// once.
func TestQueueDrainOutlivesItsMessage(t *testing.T) {
	e := newAWSEnv(t)
	e.proxy.LimitInFlight(inFlightLimit)
	m, ns := e.guardedHook(t)
	p := e.startProcessor(t, "outlive", "--max-in-flight="+inFlightLimit.String())
	handedOver(t, e, p, m)
	beats := e.proxy.Heartbeats(m.instance)
	eventually(t, "heartbeats after the hand-over", func() bool { return e.proxy.Heartbeats(m.instance) >= beats+3 })
	if _, done := e.proxy.Completed(m.instance); done {
		t.Fatal("lifecycle action completed while the budget still held the pod")
	}

	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != moto.ResultContinue || c.Source != moto.SourceAPI {
		t.Errorf("lifecycle action ended %+v, want CONTINUE by lastcall", c)
	}
	if n := e.proxy.Requests(moto.ActionCompleteLifecycleAction); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	waitNode(t, m.node, func(n *corev1.Node) bool { return !carried(n, m.instance) })
	if n := p.metric(t, "lastcall_queue_errors_total", map[string]string{"operation": "change_visibility"}); n != 0 {
		t.Errorf("%v visibility extensions refused, want none past the limit", n)
	}
	if n := p.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": "asg-terminate"}); n != 1 {
		t.Errorf("the hook's message was received %v times, want once", n)
	}
}

// The replica carrying a handed-over drain stops. Another takes the drain
// up from the node, with its heartbeats, and completes the action once the
// budget allows.
func TestQueueCarriedDrainTakenUpByAnotherReplica(t *testing.T) {
	e := newAWSEnv(t)
	e.proxy.LimitInFlight(inFlightLimit)
	m, ns := e.guardedHook(t)
	limit := "--max-in-flight=" + inFlightLimit.String()
	a := e.startProcessor(t, "carrier-a", limit)
	handedOver(t, e, a, m)
	a.stop()

	b := e.startProcessor(t, "carrier-b", limit)
	eventually(t, "replica b taking the carried drain up", func() bool {
		return b.metric(t, "lastcall_queue_carried_taken_up_total", nil) == 1
	})
	beats := e.proxy.Heartbeats(m.instance)
	eventually(t, "replica b's heartbeats", func() bool { return e.proxy.Heartbeats(m.instance) >= beats+2 })
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if n := e.proxy.Requests(moto.ActionCompleteLifecycleAction); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	if n := b.metric(t, "lastcall_lifecycle_completions_total", map[string]string{"result": "CONTINUE", "drain": "finished"}); n != 1 {
		t.Errorf("replica b completed %v actions after a finished drain, want 1", n)
	}
	waitNode(t, m.node, func(n *corev1.Node) bool { return !carried(n, m.instance) })
}
