package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// An ordinary scale-in: a terminate hook has no cloud deadline, and
// heartbeats keep it alive. The node's pod is guarded by a budget that
// allows no disruption until its replacement can run somewhere, which
// takes longer than --fallback-deadline (20 s here, 2 min by default).
// The pod is not deleted while its budget forbids it, heartbeats go on
// the whole time, and once a second replica runs on a spare node, the pod
// is evicted and the action completed with CONTINUE, once.
func TestQueueScaleInHonoursBudgetsPastTheFallback(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	guarded := guardedPod(t, ns, m.node, pool)
	p := e.startProcessor(t, "scalein", "--fallback-deadline=20s")
	e.send(t, terminateHook(m))
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	checkDrainDeadline(t, m.node, "(in 29m5", "(in 30m0s)") // --lifecycle-deadline's 30 min from the message's time

	// 30 heartbeats, one a second: the drain has outlived the fallback
	// deadline by 10 s, and the override it would have made by more.
	eventually(t, "30 heartbeats, or the action's end", func() bool {
		_, done := e.proxy.Completed(m.instance)
		return done || e.proxy.Heartbeats(m.instance) >= 30
	})
	if c, done := e.proxy.Completion(m.instance); done {
		t.Fatalf("lifecycle action completed (%s) after %d heartbeats, while its node's pod could not leave; budget overrides %v",
			c.Result, e.proxy.Heartbeats(m.instance), p.metric(t, "lastcall_pdb_overrides_total", nil))
	}
	pod, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), guarded.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		t.Fatalf("pod %s deleted while its budget allowed no disruption", guarded.Name)
	case err != nil:
		t.Fatal(err)
	case pod.DeletionTimestamp != nil:
		t.Fatalf("pod %s terminating while its budget allowed no disruption", guarded.Name)
	}

	// A node for a second replica: once it is Ready, the budget allows one
	// disruption.
	newNode(t, "spare", pool)
	scaleTo(t, ns, "api", 2)
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" || c.Token != m.token {
		t.Fatalf("completion %+v, want CONTINUE", c)
	}
	if n := e.proxy.Requests("CompleteLifecycleAction"); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), guarded.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("action completed with pod %s still on the node (%v)", guarded.Name, err)
	}
	if n := p.metric(t, "lastcall_pdb_overrides_total", nil); n != 0 {
		t.Errorf("%v budget overrides, want none", n)
	}
	if !drainedNode(waitNode(t, m.node, drainedNode)) {
		t.Error("node not recorded drained")
	}
}

// A lifecycle bound longer than the hook's global timeout (100 heartbeat
// timeouts of 300 s: 8 h 20 min) is cut to it: the drain never outlives
// what heartbeats can keep alive.
func TestQueueLifecycleDeadlineWithinTheHooksTimeout(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	guardedPod(t, ns, m.node, pool)
	e.startProcessor(t, "bound", "--lifecycle-deadline=10h")
	e.send(t, terminateHook(m))
	checkDrainDeadline(t, m.node, "(in 8h19m", "(in 8h20m0s)")
}

// checkDrainDeadline waits for the node's DrainStarted Event and checks it
// names a deadline in one of the forms given.
func checkDrainDeadline(t *testing.T, name string, forms ...string) {
	t.Helper()
	for _, ev := range waitEvents(t, "default", name, "DrainStarted") {
		if ev.Reason != "DrainStarted" {
			continue
		}
		for _, f := range forms {
			if strings.Contains(ev.Message, f) {
				return
			}
		}
		t.Errorf("DrainStarted %q, want a deadline %v", ev.Message, forms)
		return
	}
}

// In dry-run, the queue processor changes nothing: for a terminate hook,
// a launch hook and a hook of an instance no node runs, it makes no
// lifecycle call (no heartbeat, no completion), changes no node, records
// no Event, and deletes each message once logged, saying dry-run.
func TestQueueDryRunChangesNothing(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	members := e.group(t, 2, pool)
	term, unknown := members[0], members[1]
	if err := env.Client.CoreV1().Nodes().Delete(ctx, unknown.node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err) // an instance of the group with no node
	}
	waitGone(t, unknown.node)
	guardedPod(t, ns, term.node, pool)
	launch := fmt.Sprintf("asg-dry-%d", time.Now().UnixNano()%1_000_000)
	ids, err := moto.CreateGroup(ctx, e.cfg, moto.Group{Name: launch, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	launched := ids[0]
	if _, err := env.AddNode(ctx, "ip-"+launched, cluster.WithProviderID("aws:///"+moto.Region+"a/"+launched)); err != nil {
		t.Fatal(err)
	}
	launchToken := e.proxy.Register(moto.LifecycleActionState{GroupName: launch, HookName: "launch", InstanceID: launched,
		Transition: "autoscaling:EC2_INSTANCE_LAUNCHING"})
	waitNode(t, "ip-"+launched, func(n *corev1.Node) bool {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	before := waitNode(t, term.node, func(*corev1.Node) bool { return true })

	e.send(t, terminateHook(term))
	e.send(t, terminateHook(unknown))
	e.send(t, eventBridge("aws.autoscaling", "EC2 Instance-launch Lifecycle Action", nil, map[string]any{
		"LifecycleActionToken": launchToken, "AutoScalingGroupName": launch, "LifecycleHookName": "launch",
		"EC2InstanceId": launched, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}))
	p := e.startProcessor(t, "dry", "--dry-run")
	eventually(t, "the three messages deleted", func() bool {
		return e.depth(t) == 0 && p.metric(t, "lastcall_queue_messages_deleted_total", nil) == 3
	})
	if n := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "dry-run"}); n != 3 {
		t.Errorf("%v messages deleted as dry-run, want 3", n)
	}
	for _, call := range []string{"CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"} {
		if n := e.proxy.Requests(call); n != 0 {
			t.Errorf("%d %s requests in dry-run", n, call)
		}
	}
	for _, id := range []string{term.instance, unknown.instance, launched} {
		if !e.proxy.Active(id) {
			t.Errorf("instance %s: its lifecycle action is no longer active", id)
		}
	}
	after := waitNode(t, term.node, func(*corev1.Node) bool { return true })
	if after.Spec.Unschedulable != before.Spec.Unschedulable || len(after.Spec.Taints) != len(before.Spec.Taints) ||
		after.Annotations[node.AnnotationState] != "" || after.Labels[node.LabelExcludeLB] != before.Labels[node.LabelExcludeLB] {
		t.Errorf("node changed in dry-run: unschedulable %v, taints %v, annotations %v",
			after.Spec.Unschedulable, after.Spec.Taints, after.Annotations)
	}
	list, err := env.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range list.Items {
		if ev.Source.Component == "lastcall" && (ev.InvolvedObject.Name == term.node || ev.InvolvedObject.Namespace == ns) {
			t.Errorf("Event in dry-run: %s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
	}
}

// waitGone waits until the node is deleted.
func waitGone(t *testing.T, name string) {
	t.Helper()
	eventually(t, "node "+name+" gone", func() bool {
		_, err := env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// A node behind a node-level load balancer is released (its lifecycle
// action completed, and the instance terminated) only once the balancer
// has had --lb-deregistration-delay to stop sending it connections, even
// when no pod on it needs evicting: kube-proxy there still forwards what
// the balancer sends to pods elsewhere.
func TestQueueReleasesAnEmptyNodeAfterTheLBDelay(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	m := e.group(t, 1, map[string]string{"pool": ns})[0]
	p := e.startProcessor(t, "lb", "--lb-deregistration-delay=3s")
	sent := time.Now()
	e.send(t, terminateHook(m))
	waitNode(t, m.node, func(n *corev1.Node) bool {
		_, out := n.Labels[corev1.LabelNodeExcludeBalancers]
		return out
	})
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	c, _ := e.proxy.Completion(m.instance)
	if gap := c.At.Sub(sent); gap < 3*time.Second {
		t.Fatalf("lifecycle action completed %s after the notice was sent, before the 3s load-balancer delay had passed", gap)
	}
	if got := p.metric(t, "lastcall_lifecycle_actions_completed_total", map[string]string{"result": "CONTINUE", "outcome": "success"}); got != 1 {
		t.Errorf("completions metric %v, want 1", got)
	}
}
