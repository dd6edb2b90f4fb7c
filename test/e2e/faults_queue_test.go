package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// Fault tests of the queue processor: SQS and the lifecycle API fail in the
// ways AWS fails, injected by the LifecycleProxy in front of moto (its
// Inject answers in each protocol's wire format, so the SDK retries what it
// would retry). Each ends with the node drained, the lifecycle action
// completed exactly once and the message deleted, or with the reason it was
// not.

// SQS throttles the processor's receives and fails its visibility
// extensions and deletes while a terminate hook's drain runs. ReceiveMessage
// is throttled on all 3 of the SDK's attempts once; one extension fails on
// all 3 of its attempts (the visibility timeout is long enough for the next
// one to keep the message hidden); DeleteMessage answers 503 twice, which
// the SDK's third attempt gets past. The processor counts the failures it
// saw, keeps running, drains once, completes once, and the message is
// deleted, never redelivered.
func TestFaultQueueSQSThrottlingAndErrors(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)

	e.proxy.Inject("ReceiveMessage", moto.SQSThrottled, 3)
	e.proxy.Inject("ChangeMessageVisibility", moto.InternalFailure, 3)
	e.proxy.Inject("DeleteMessage", moto.ServiceUnavailable, 2)
	// An extension every 8 s; a failed one takes up to 6 s of the SDK's
	// backoff, and the next one still comes before the 24 s run out.
	p := e.startProcessor(t, "replica-a", "--visibility-timeout=24s")

	eventually(t, "the throttled receive counted, then the message received", func() bool {
		return p.metric(t, "lastcall_queue_errors_total", map[string]string{"operation": "receive"}) == 1 &&
			p.metric(t, "lastcall_queue_receives_total", nil) == 1
	})
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/asg-termination") })
	eventually(t, "a failed extension, then a successful one, while the PDB blocks the drain", func() bool {
		return p.metric(t, "lastcall_queue_errors_total", map[string]string{"operation": "change_visibility"}) == 1 &&
			p.metric(t, "lastcall_queue_visibility_extensions_total", nil) >= 1
	})
	if e.proxy.Injected("ChangeMessageVisibility") != 3 {
		t.Fatalf("%d extensions failed by injection, want 3 (one call, every attempt)", e.proxy.Injected("ChangeMessageVisibility"))
	}
	if _, done := e.proxy.Completed(m.instance); done {
		t.Fatal("lifecycle action completed before the drain finished")
	}
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the message deleted past two 503s", func() bool {
		return e.depth(t) == 0 && p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 1
	})
	if n, inj := e.proxy.Requests("DeleteMessage"), e.proxy.Injected("DeleteMessage"); n != 3 || inj != 2 {
		t.Errorf("DeleteMessage: %d requests, %d injected faults; want 3 and 2 (the SDK's retries got past them)", n, inj)
	}
	wantCompletedOnce(t, e, m, "CONTINUE")
	p.checkMetrics(t, []metricWant{
		{"lastcall_queue_errors_total", map[string]string{"operation": "receive"}, 1},
		{"lastcall_queue_errors_total", map[string]string{"operation": "change_visibility"}, 1},
		{"lastcall_queue_errors_total", map[string]string{"operation": "delete"}, 0},
		{"lastcall_queue_receives_total", nil, 1},
		{"lastcall_queue_messages_released_total", nil, 0},
		{"lastcall_drain_duration_seconds", map[string]string{"result": "success"}, 1},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "success"}, 1},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "error"}, 0},
	})
	eventually(t, "the queue source up and the processor ready", func() bool {
		return p.metric(t, "lastcall_source_up", map[string]string{"source": "sqs"}) == 1 && p.probe(t, "/readyz") == 200
	})
}

// DeleteMessage fails on every one of the SDK's attempts after the drain
// and the completion: the message stays, reappears once its visibility
// timeout passes, and finds its notice's part in the node's episode over:
// no second drain and no second completion; then it is deleted.
func TestFaultQueueDeleteFailsPastRetries(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	create(t, deployment(ns, "web", 1, pool, 0), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { on := onNode(p, m.node); return len(on) == 1 && ready(on[0]) })
	newNode(t, "spare", pool)
	e.send(t, terminateHook(m))

	e.proxy.Inject("DeleteMessage", moto.InternalFailure, 3)
	// The message reappears 12 s after its last extension (every 4 s),
	// later than the failed delete's retries end (at most 6 s of backoff):
	// the second delivery never races the first one's delete.
	p := e.startProcessor(t, "replica-a", "--visibility-timeout=12s")

	waitNode(t, m.node, drainedNode)
	eventually(t, "the delete failing past the SDK's retries", func() bool {
		return p.metric(t, "lastcall_queue_errors_total", map[string]string{"operation": "delete"}) == 1
	})
	if _, ok := e.proxy.Completed(m.instance); !ok {
		t.Fatal("the lifecycle action was not completed before the delete")
	}
	eventually(t, "the message redelivered, processed again and deleted", func() bool {
		return p.metric(t, "lastcall_queue_receives_total", nil) == 2 &&
			p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 1 && e.depth(t) == 0
	})
	if n := e.proxy.Requests("DeleteMessage"); n != 4 {
		t.Errorf("DeleteMessage: %d requests, want 4 (3 failed attempts, then the second delivery's)", n)
	}
	// The first delivery completed the action; the second one asked
	// nothing of Auto Scaling.
	var completes []moto.Call
	for _, c := range e.proxy.Calls() {
		if c.Action == moto.ActionCompleteLifecycleAction {
			completes = append(completes, c)
		}
	}
	if len(completes) != 1 || completes[0].ErrorCode != "" {
		t.Errorf("CompleteLifecycleAction calls %+v, want one success", completes)
	}
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" || c.Token != m.token || c.Source != moto.SourceAPI || !c.At.Equal(completes[0].At) {
		t.Errorf("completion %+v, want CONTINUE with token %s by the first call", c, m.token)
	}
	p.checkMetrics(t, []metricWant{
		{"lastcall_queue_messages_received_total", map[string]string{"kind": "asg-terminate"}, 2},
		{"lastcall_drain_duration_seconds", nil, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "cordon"}, 1},
		{"lastcall_evictions_total", nil, 1},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "success"}, 1},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "gone"}, 0},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "error"}, 0},
		{"lastcall_lifecycle_completions_total", map[string]string{"drain": "finished"}, 1},
		{"lastcall_lifecycle_heartbeats_total", map[string]string{"outcome": "gone"}, 0},
	})
}

// The lifecycle action is completed by someone else (an operator, another
// tool) in the middle of the drain: Auto Scaling then rejects lastcall's
// token with ValidationError "No active Lifecycle Action found", for the
// heartbeats and for the completion. lastcall stops the heartbeats at the
// first such answer, finishes the drain anyway, calls
// CompleteLifecycleAction once without retrying it, counts it as gone, and
// deletes the message.
func TestFaultQueueLifecycleActionGone(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)
	p := e.startProcessor(t, "replica-a")

	eventually(t, "heartbeats while the PDB blocks the drain", func() bool { return e.proxy.Heartbeats(m.instance) >= 2 })
	asg := autoscaling.NewFromConfig(e.cfg)
	if _, err := asg.CompleteLifecycleAction(context.Background(), &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String(m.group), LifecycleHookName: aws.String("drain"),
		InstanceId: aws.String(m.instance), LifecycleActionToken: aws.String(m.token), LifecycleActionResult: aws.String("ABANDON"),
	}); err != nil {
		t.Fatalf("completing the action as an operator would: %v", err)
	}
	eventually(t, "the heartbeats to find the action gone", func() bool {
		return p.metric(t, "lastcall_lifecycle_heartbeats_total", map[string]string{"outcome": "gone"}) == 1
	})
	if n := waitNode(t, m.node, func(*corev1.Node) bool { return true }); drainedNode(n) {
		t.Fatal("the node drained while the PDB still held its pod")
	}
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the message deleted", func() bool {
		return e.depth(t) == 0 && p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 1
	})

	// One completion: the operator's. lastcall's one call was rejected.
	wantCompletedOnce(t, e, m, "ABANDON")
	var lastcallCompletes, goneHeartbeats, afterGone int
	sawGone := false
	for _, c := range e.proxy.Calls() {
		switch {
		case c.Action == moto.ActionCompleteLifecycleAction && c.Result == "CONTINUE":
			lastcallCompletes++
			if c.ErrorCode != "ValidationError" {
				t.Errorf("lastcall's CompleteLifecycleAction answered %d %q, want ValidationError", c.Status, c.ErrorCode)
			}
		case c.Action == moto.ActionRecordLifecycleActionHeartbeat && sawGone:
			afterGone++
		case c.Action == moto.ActionRecordLifecycleActionHeartbeat && c.ErrorCode == "ValidationError":
			goneHeartbeats++
			sawGone = true
		}
	}
	if lastcallCompletes != 1 || goneHeartbeats != 1 || afterGone != 0 {
		t.Errorf("lastcall: %d CompleteLifecycleAction calls, %d rejected heartbeats, %d heartbeats after that; want 1, 1, 0",
			lastcallCompletes, goneHeartbeats, afterGone)
	}
	p.checkMetrics(t, []metricWant{
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "gone"}, 1},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "success"}, 0},
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"outcome": "error"}, 0},
		{"lastcall_lifecycle_completions_total", nil, 0},
		{"lastcall_drain_duration_seconds", map[string]string{"result": "success"}, 1},
		{"lastcall_queue_receives_total", nil, 1},
	})
}

// The queue processor, a real process, gets SIGTERM in the middle of a
// drain held up by a PDB. It exits cleanly within 10 s, without completing
// the lifecycle action or deleting the message: it releases the node's
// Lease and makes the message visible again (after --retry-after). A new
// replica resumes the heartbeats at once, finishes the drain and completes
// the action, once.
func TestFaultQueueSIGTERMMidDrain(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)

	a := e.startProcessorProcess(t, "replica-a", "LASTCALL_VISIBILITY_TIMEOUT=30s", "LASTCALL_LEASE_DURATION=15s")
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/asg-termination") })
	eventually(t, "heartbeats while the PDB blocks the drain", func() bool { return e.proxy.Heartbeats(m.instance) >= 2 })
	if h := leaseHolder(t, m.node); h != "replica-a" {
		t.Fatalf("lease holder %q during the drain, want replica-a", h)
	}

	start := time.Now()
	err := a.Stop() // SIGTERM; SIGKILL and an error after 10 s
	took := time.Since(start)
	log, _ := os.ReadFile(a.LogPath)
	if err != nil {
		t.Fatalf("after SIGTERM: %v (%v)\n%s", err, took, log)
	}
	t.Logf("exited %v after SIGTERM", took)
	for _, want := range []string{"shutting down", `msg="message left to reappear"`, "reason=interrupted"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the stopped replica's log lacks %q:\n%s", want, log)
		}
	}
	// Nothing finished: not completed, not deleted; the lease is free, and
	// the message visible again well before its 30 s visibility timeout.
	if _, done := e.proxy.Completed(m.instance); done || e.proxy.Requests(moto.ActionCompleteLifecycleAction) != 0 {
		t.Fatal("the stopped replica completed the lifecycle action")
	}
	if h := leaseHolder(t, m.node); h != "" {
		t.Fatalf("lease still held by %q after a clean shutdown", h)
	}
	eventually(t, "the message visible again", func() bool { return visibleMessages(t, e) == 1 })
	if n := waitNode(t, m.node, func(*corev1.Node) bool { return true }); !n.Spec.Unschedulable || drainedNode(n) {
		t.Fatalf("node after the shutdown: unschedulable %v, state %s; want held, not drained", n.Spec.Unschedulable, n.Annotations["lastcall.io/state"])
	}

	before := e.proxy.Heartbeats(m.instance)
	b := e.startProcessor(t, "replica-b")
	eventually(t, "the new replica to resume the heartbeats", func() bool { return e.proxy.Heartbeats(m.instance) >= before+2 })
	if h := leaseHolder(t, m.node); h != "replica-b" {
		t.Fatalf("lease holder %q after the restart, want replica-b", h)
	}
	if _, done := e.proxy.Completed(m.instance); done {
		t.Fatal("lifecycle action completed while the PDB still held the pod")
	}
	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed and the message deleted", func() bool {
		_, ok := e.proxy.Completed(m.instance)
		return ok && e.depth(t) == 0 && b.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 1
	})
	wantCompletedOnce(t, e, m, "CONTINUE")
}

// wantCompletedOnce checks that m's lifecycle action ended once, by a
// successful CompleteLifecycleAction call with result and m's token.
func wantCompletedOnce(t *testing.T, e *awsEnv, m member, result string) {
	t.Helper()
	ok := 0
	for _, c := range e.proxy.Calls() {
		if c.Action == moto.ActionCompleteLifecycleAction && c.InstanceID == m.instance && c.ErrorCode == "" {
			ok++
		}
	}
	c, done := e.proxy.Completion(m.instance)
	if !done || ok != 1 || c.Result != result || c.Token != m.token || c.Source != moto.SourceAPI {
		t.Errorf("completion %+v (%v) after %d successful calls, want one %s with token %s", c, done, ok, result, m.token)
	}
}

// leaseHolder is the holder of node's Lease, "" when it is free.
func leaseHolder(t *testing.T, node string) string {
	t.Helper()
	l, err := env.Client.CoordinationV1().Leases("default").Get(context.Background(), lease.Name(node), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the lease of %s: %v", node, err)
	}
	return aws.ToString(l.Spec.HolderIdentity)
}

// visibleMessages is the number of messages that a receive would get now.
func visibleMessages(t *testing.T, e *awsEnv) int {
	t.Helper()
	out, err := e.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: &e.queueURL,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
