package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/emulators/moto"
	"github.com/lastcall/lastcall/test/tools"
)

// deploy/aws/setup.sh, the queue's AWS side, run with the AWS CLI against
// moto: it makes the queue, its policy, the five EventBridge rules, a
// terminate hook on the group and the IAM role. Events of each kind put on
// the default bus (aws events put-events) reach the queue through the
// rules, and the queue processor acts on each: a spot interruption, a
// state change and an AWS Health scheduled change hold and drain their
// nodes, a rebalance recommendation holds its node, and a terminate
// lifecycle action is completed. An event of another kind reaches nothing.
func TestAWSSetupRecipe(t *testing.T) {
	aws := func(t *testing.T, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command("aws", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatalf("the AWS CLI is not installed (it comes with moto's Python environment): %v", err)
	}
	e := newAWSEnv(t)
	motoURL := sharedMoto(t).URL()
	ms := e.group(t, 5, nil)
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cluster := fmt.Sprintf("recipe-%d", time.Now().UnixNano()%1_000_000)
	environ := append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_DEFAULT_REGION="+moto.Region,
		"CLUSTER="+cluster, "REGION="+moto.Region, "ASG_NAMES="+ms[0].group, "ENDPOINT_URL="+motoURL)
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "aws", "setup.sh"))
	cmd.Env = environ
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/aws/setup.sh: %v\n%s", err, out)
	}
	var queueURL string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "QUEUE_URL="); ok {
			queueURL = v
		}
	}
	if queueURL == "" {
		t.Fatalf("setup.sh printed no QUEUE_URL:\n%s", out)
	}
	// Run again: it only updates.
	cmd = exec.Command("bash", filepath.Join(root, "deploy", "aws", "setup.sh"))
	cmd.Env = environ
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/aws/setup.sh, a second time: %v\n%s", err, out)
	}
	hooks, err := autoscaling.NewFromConfig(moto.Config(motoURL)).DescribeLifecycleHooks(context.Background(),
		&autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: &ms[0].group})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, h := range hooks.LifecycleHooks {
		found = found || (aws_(h.LifecycleHookName) == "lastcall-"+cluster && aws_(h.LifecycleTransition) == "autoscaling:EC2_INSTANCE_TERMINATING")
	}
	if !found {
		t.Errorf("no terminate hook lastcall-%s on group %s", cluster, ms[0].group)
	}

	soon := time.Now().Add(10 * time.Minute).UTC()
	type entry struct {
		Source, DetailType, Detail string
		Resources                  []string `json:",omitempty"`
	}
	detail := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	entries := []entry{
		{"aws.ec2", "EC2 Spot Instance Interruption Warning", detail(map[string]any{"instance-id": ms[0].instance, "instance-action": "terminate"}), []string{instanceARN(ms[0].instance)}},
		{"aws.ec2", "EC2 Instance Rebalance Recommendation", detail(map[string]any{"instance-id": ms[1].instance}), []string{instanceARN(ms[1].instance)}},
		{"aws.ec2", "EC2 Instance State-change Notification", detail(map[string]any{"instance-id": ms[2].instance, "state": "stopping"}), []string{instanceARN(ms[2].instance)}},
		{"aws.health", "AWS Health Event", detail(map[string]any{"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_STOP_SCHEDULED",
			"statusCode": "upcoming", "startTime": soon.Format("Mon, 02 Jan 2006 15:04:05 GMT"), "affectedEntities": []map[string]string{{"entityValue": ms[3].instance}}}), nil},
		{"aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", detail(map[string]any{"LifecycleActionToken": ms[4].token, "AutoScalingGroupName": ms[4].group,
			"LifecycleHookName": "drain", "EC2InstanceId": ms[4].instance, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}), nil},
		{"aws.ec2", "EC2 AMI State Change", detail(map[string]any{"ImageId": "ami-1"}), nil},
	}
	b, _ := json.Marshal(entries)
	aws(t, environ, "--endpoint-url", motoURL, "events", "put-events", "--entries", string(b))

	p := e.startProcessor(t, "recipe", "--queue-url="+queueURL)
	for _, m := range []member{ms[0], ms[2]} {
		waitNode(t, m.node, drainedNode)
	}
	for _, m := range []member{ms[1], ms[3]} {
		waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	}
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(ms[4].instance); return ok })
	if c, _ := e.proxy.Completion(ms[4].instance); c.Result != "CONTINUE" {
		t.Errorf("completion %+v, want CONTINUE", c)
	}
	if n := p.metric(t, "lastcall_queue_messages_received_total", nil); n != 5 {
		t.Errorf("%v messages received, want the 5 the rules route (not the AMI state change)", n)
	}
}

func aws_(s *string) string { return aws.ToString(s) }
