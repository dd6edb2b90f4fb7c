package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
)

// healthEvent is an EC2 scheduled change of arn, in status, for instance.
func healthEvent(arn, status, instance string, start time.Time) string {
	return eventBridge("aws.health", "AWS Health Event", []string{instanceARN(instance)}, map[string]any{
		"eventArn": arn, "service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
		"statusCode": status, "startTime": start.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"),
		"affectedEntities": []map[string]string{{"entityValue": instance}},
	})
}

func stateChange(instance, state string) string {
	return eventBridge("aws.ec2", "EC2 Instance State-change Notification", []string{instanceARN(instance)},
		map[string]any{"instance-id": instance, "state": state})
}

// released says lastcall holds the node no more and undid all it did.
func released(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if len(t.Key) > len(node.TaintPrefix) && t.Key[:len(node.TaintPrefix)] == node.TaintPrefix {
			return false
		}
	}
	return !n.Spec.Unschedulable && n.Annotations[node.AnnotationState] == "" && n.Labels[node.LabelExcludeLB] == ""
}

// ownedHolds are the holds owner has on n.
func ownedHolds(t *testing.T, n *corev1.Node, owner node.Owner) []node.Hold {
	t.Helper()
	st, err := node.StateOf(n)
	if err != nil {
		t.Fatal(err)
	}
	return st.Owned(owner)
}

// A scheduled change that closes withdraws the queue's notice of it: the
// queue's hold is released, and the agent's hold of the same kind on the
// same node stays, with its taint and cordon.
func TestQueueHealthClosedReleasesHold(t *testing.T) {
	e := newAWSEnv(t)
	m := e.group(t, 1, nil)[0]
	agentHold := interruption.Event{ID: interruption.NewID(interruption.KindScheduledMaintenance, "imds", m.instance),
		Kind: interruption.KindScheduledMaintenance, Action: interruption.ActionCordon}
	if _, err := node.NewClient(env.Client, nil, clock.RealClock{}, node.OwnerAgent, false, discardLog()).
		Hold(context.Background(), m.node, agentHold); err != nil {
		t.Fatal(err)
	}
	arn := "arn:aws:health:" + "us-east-1" + "::event/EC2/AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED/e2e-" + m.instance
	start := time.Now().Add(10 * time.Minute)
	e.send(t, healthEvent(arn, "upcoming", m.instance, start))
	p := e.startProcessor(t, "health-closed")
	waitNode(t, m.node, func(n *corev1.Node) bool { return drainedNode(n) && len(ownedHolds(t, n, node.OwnerQueue)) == 1 })
	eventually(t, "the open event deleted", func() bool { return e.depth(t) == 0 })

	e.send(t, healthEvent(arn, "closed", m.instance, start))
	n := waitNode(t, m.node, func(n *corev1.Node) bool { return len(ownedHolds(t, n, node.OwnerQueue)) == 0 })
	if h := ownedHolds(t, n, node.OwnerAgent); len(h) != 1 || h[0].ID != agentHold.ID {
		t.Errorf("agent's holds %+v, want its one hold left alone", h)
	}
	if !n.Spec.Unschedulable || !hasTaint(n, node.TaintKey(interruption.KindScheduledMaintenance)) {
		t.Errorf("the agent's hold lost its cordon or taint: unschedulable=%v taints %v", n.Spec.Unschedulable, n.Spec.Taints)
	}
	eventually(t, "the closed event deleted and counted", func() bool {
		return e.depth(t) == 0 &&
			p.metric(t, "lastcall_queue_notices_withdrawn_total", map[string]string{"kind": "scheduled-change"}) == 1
	})
	waitEvents(t, "default", m.node, "InterruptionCancelled")
}

// An instance that stops and runs again is drained when it stops and
// released, uncordoned and untainted, when it runs.
func TestQueueStateChangeRunningReleasesHold(t *testing.T) {
	e := newAWSEnv(t)
	m := e.group(t, 1, nil)[0]
	e.send(t, stateChange(m.instance, "stopping"))
	e.send(t, stateChange(m.instance, "stopped"))
	p := e.startProcessor(t, "state-running")
	waitNode(t, m.node, func(n *corev1.Node) bool { return drainedNode(n) && len(ownedHolds(t, n, node.OwnerQueue)) == 2 })
	eventually(t, "the stop events deleted", func() bool { return e.depth(t) == 0 })

	e.send(t, stateChange(m.instance, "pending"))
	e.send(t, stateChange(m.instance, "running"))
	waitNode(t, m.node, released)
	eventually(t, "the start events deleted and counted", func() bool {
		return e.depth(t) == 0 &&
			p.metric(t, "lastcall_queue_notices_withdrawn_total", map[string]string{"kind": "instance-state-change"}) == 2
	})
}

// A rebalance recommendation no interruption follows holds the node for
// --rebalance-hold, then the hold is released.
func TestQueueRebalanceHoldExpires(t *testing.T) {
	e := newAWSEnv(t)
	m := e.group(t, 1, nil)[0]
	const bound = 3 * time.Second
	e.send(t, eventBridge("aws.ec2", "EC2 Instance Rebalance Recommendation", []string{instanceARN(m.instance)},
		map[string]any{"instance-id": m.instance}))
	p := e.startProcessor(t, "rebalance-hold", "--rebalance-hold="+bound.String())
	n := waitNode(t, m.node, func(n *corev1.Node) bool {
		return n.Spec.Unschedulable && hasTaint(n, node.TaintKey(interruption.KindRebalance))
	})
	holds := ownedHolds(t, n, node.OwnerQueue)
	if len(holds) != 1 {
		t.Fatalf("queue holds %+v, want the rebalance one", holds)
	}
	waitNode(t, m.node, released)
	if now := time.Now(); now.Before(holds[0].Since.Add(bound)) {
		t.Errorf("released at %s, before the hold of %s had lasted %s", now, holds[0].Since, bound)
	}
	// Other tests' nodes, in the same cluster, may hold expired
	// rebalance holds too: the count is at least this one.
	eventually(t, "the release counted", func() bool {
		return p.metric(t, "lastcall_queue_notices_withdrawn_total", map[string]string{"kind": "rebalance-recommendation"}) >= 1
	})
	waitEvents(t, "default", m.node, "InterruptionCancelled")
}
