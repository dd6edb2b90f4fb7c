package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// Each kind of message leads to its documented action: the nodes drained,
// only cordoned, or left alone, the message deleted with its reason, and
// lifecycle actions completed.
func TestQueueEventKinds(t *testing.T) {
	e := newAWSEnv(t)
	ms := e.group(t, 9, nil)
	soon := time.Now().Add(10 * time.Minute).UTC()
	launch := ms[8]
	e.proxy.Register(moto.LifecycleActionState{GroupName: launch.group, HookName: "launch", InstanceID: launch.instance,
		Token: "launch-token", Transition: "autoscaling:EC2_INSTANCE_LAUNCHING"})
	bare, _ := json.Marshal(map[string]string{
		"Origin": "AutoScalingGroup", "Destination": "EC2", "Service": "AWS Auto Scaling", "Time": time.Now().UTC().Format(time.RFC3339),
		"AccountId": "123456789012", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING", "RequestId": "req-1",
		"LifecycleActionToken": ms[7].token, "EC2InstanceId": ms[7].instance, "LifecycleHookName": "drain", "AutoScalingGroupName": ms[7].group,
	})
	sns, _ := json.Marshal(map[string]string{"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:asg", "Message": string(bare)})
	testNote, _ := json.Marshal(map[string]string{"AccountId": "123456789012", "RequestId": "req-test", "Service": "AWS Auto Scaling",
		"Event": "autoscaling:TEST_NOTIFICATION", "Time": time.Now().UTC().Format(time.RFC3339), "AutoScalingGroupName": ms[0].group})

	bodies := []string{
		spotWarning(ms[0].instance),
		eventBridge("aws.ec2", "EC2 Instance Rebalance Recommendation", []string{instanceARN(ms[1].instance)}, map[string]any{"instance-id": ms[1].instance}),
		eventBridge("aws.health", "AWS Health Event", nil, map[string]any{
			"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_STOP_SCHEDULED", "statusCode": "upcoming",
			"startTime": soon.Format("Mon, 02 Jan 2006 15:04:05 GMT"), "affectedEntities": []map[string]string{{"entityValue": ms[2].instance}, {"entityValue": ms[3].instance}},
		}),
		eventBridge("aws.ec2", "EC2 Instance State-change Notification", []string{instanceARN(ms[4].instance)}, map[string]any{"instance-id": ms[4].instance, "state": "stopping"}),
		eventBridge("aws.ec2", "EC2 Instance State-change Notification", []string{instanceARN(ms[5].instance)}, map[string]any{"instance-id": ms[5].instance, "state": "running"}),
		eventBridge("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning", []string{instanceARN(ms[6].instance)},
			map[string]any{"instance-id": ms[6].instance, "instance-action": "terminate", "instance-termination-time": soon.Format(time.RFC3339)}),
		string(sns),
		eventBridge("aws.autoscaling", "EC2 Instance-launch Lifecycle Action", nil, map[string]any{
			"LifecycleActionToken": "launch-token", "AutoScalingGroupName": launch.group, "LifecycleHookName": "launch",
			"EC2InstanceId": launch.instance, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}),
		string(testNote),
		eventBridge("aws.ec2", "EC2 AMI State Change", nil, map[string]any{"ImageId": "ami-1"}),
	}
	for _, b := range bodies {
		e.send(t, b)
	}
	p := e.startProcessor(t, "kinds")

	for i, m := range []member{ms[0], ms[2], ms[3], ms[4], ms[6], ms[7]} {
		n := waitNode(t, m.node, drainedNode)
		if i == 0 && !hasTaint(n, "lastcall.io/spot-interruption") {
			t.Errorf("spot: taints %v", n.Spec.Taints)
		}
	}
	n := waitNode(t, ms[1].node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	if st, _ := node.StateOf(n); !hasTaint(n, "lastcall.io/rebalance-recommendation") || len(st.Holds) != 1 || st.Holds[0].Drain != "" {
		t.Errorf("rebalance: want cordoned and not drained; taints %v state %+v", n.Spec.Taints, st)
	}
	eventually(t, "every message deleted", func() bool { return e.depth(t) == 0 })
	if n := waitNode(t, ms[5].node, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable {
		t.Error("a state change to running cordoned the node")
	}
	for _, m := range []member{ms[7], launch} {
		if r, ok := e.proxy.Completed(m.instance); !ok || r != "CONTINUE" {
			t.Errorf("%s: lifecycle action completed=%v result=%q", m.instance, ok, r)
		}
	}
	for reason, want := range map[string]float64{"processed": 8, "state-running": 0, "test-notification": 1, "unknown-kind": 1} {
		if got := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("deleted{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	for _, kind := range []string{"spot-interruption", "rebalance-recommendation", "scheduled-change", "instance-state-change",
		"capacity-reservation-interruption", "asg-terminate", "asg-launch", "asg-test-notification", "unknown"} {
		if got := p.metric(t, "lastcall_queue_messages_received_total", map[string]string{"kind": kind}); got < 1 {
			t.Errorf("received{kind=%s} = %v", kind, got)
		}
	}
}

// Malformed messages, instances of another cluster and unknown instances
// are deleted with their reason and counted; the processor keeps working.
func TestQueueBadMessages(t *testing.T) {
	e := newAWSEnv(t)
	ms := e.group(t, 2, nil)
	ours, theirs := ms[0], ms[1]
	if _, err := ec2.NewFromConfig(e.cfg).CreateTags(context.Background(), &ec2.CreateTagsInput{
		Resources: []string{ours.instance}, Tags: []ec2types.Tag{{Key: aws.String("kubernetes.io/cluster/e2e"), Value: aws.String("owned")}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{
		"not json at all",
		`{"version":"0","id":"x","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","time":"2026-01-01T00:00:00Z","detail":{"instance-id":42}}`,
		strings.Repeat("x", 300<<10)[:250<<10],
		spotWarning(theirs.instance),
		spotWarning("i-0000000000000dead"),
		spotWarning(ours.instance),
	} {
		e.send(t, b)
	}
	p := e.startProcessor(t, "bad", "--managed-tag=kubernetes.io/cluster/e2e")
	waitNode(t, ours.node, drainedNode)
	eventually(t, "every message deleted", func() bool { return e.depth(t) == 0 })
	for reason, want := range map[string]float64{"unparsable": 3, "not-our-cluster": 1, "unknown-instance": 1, "processed": 1} {
		if got := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("deleted{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if n := waitNode(t, theirs.node, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable {
		t.Error("another cluster's instance was cordoned")
	}
	if code := p.probe(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d after bad messages", code)
	}
}

// A launch lifecycle action is completed only once the instance's node has
// joined the cluster and is Ready; until then the processor waits for it.
func TestQueueLaunchHookWaitsForReadyNode(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	id, token := e.launchHook(t, "asg-launch")
	p := e.startProcessor(t, "launch")
	eventually(t, "the node looked for again while none exists", func() bool {
		return p.metric(t, "lastcall_queue_waits_total", map[string]string{"reason": "node-not-joined"}) >= 2
	})
	if _, done := e.proxy.Completed(id); done {
		t.Fatal("launch action completed before the node joined")
	}
	if _, err := env.AddNode(ctx, "ip-"+id, cluster.WithProviderID("aws:///"+moto.Region+"a/"+id)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the launch action completed", func() bool { _, ok := e.proxy.Completed(id); return ok })
	if c, _ := e.proxy.Completion(id); c.Result != "CONTINUE" || c.Token != token {
		t.Fatalf("completion %+v", c)
	}
	eventually(t, "the message deleted", func() bool { return e.depth(t) == 0 })
}
