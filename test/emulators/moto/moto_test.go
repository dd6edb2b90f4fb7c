package moto

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// shared is the moto_server most tests share, started by TestMain: moto
// answers its first requests slowly while it loads its backends, and several
// servers starting together on a small machine take seconds each. Tests
// sharing it use names of their own (see name) and never Reset it.
var shared *Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting moto_server:", err)
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// name returns a name for AWS resources unique to the test, and to this run
// of it (go test -count=N runs it again against the same server).
func name(t *testing.T) string {
	base := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9-]+`).ReplaceAllString(t.Name(), "-"))
	return fmt.Sprintf("%s-%08x", base, rand.Uint32())
}

// startMoto starts a moto_server for one test and stops it at the end. A
// missing moto fails the test with ErrNotInstalled's message.
func startMoto(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	t.Logf("moto_server answered %v after its start", s.StartupTime())
	return s
}

// testCtx is a context bounding one test's calls.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestStartResetStop runs a server of its own.
func TestStartResetStop(t *testing.T) {
	t.Parallel()
	s := startMoto(t)
	ctx := testCtx(t)
	if s.URL() == "" || s.LogPath() == "" {
		t.Fatalf("URL %q, LogPath %q", s.URL(), s.LogPath())
	}
	client := sqs.NewFromConfig(Config(s.URL()))
	if _, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("reset-me")}); err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	if err := s.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("reset-me")})
	if _, ok := errors.AsType[*sqstypes.QueueDoesNotExist](err); !ok {
		t.Fatalf("GetQueueUrl after Reset: %v, want QueueDoesNotExist", err)
	}

	s.Stop()
	s.Stop() // idempotent
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := s.Reset(ctx); err == nil {
		t.Fatal("Reset after Stop succeeded")
	}
}

func TestNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(testCtx(t))
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Start with an empty PATH: %v, want ErrNotInstalled", err)
	}
	t.Logf("error: %v", err)
}

// TestIgnoresAWSEnvironment: the AWS_* variables of a test (here an empty
// AWS_PROFILE, which made botocore inside moto fail every request) do not
// reach moto.
func TestIgnoresAWSEnvironment(t *testing.T) {
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_DEFAULT_REGION", "nowhere-1")
	s := startMoto(t)
	client := sqs.NewFromConfig(Config(s.URL()))
	if _, err := client.ListQueues(testCtx(t), &sqs.ListQueuesInput{}); err != nil {
		t.Fatalf("ListQueues: %v", err)
	}
}

func TestSQS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	client := sqs.NewFromConfig(Config(shared.URL()))

	q, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name(t))})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    q.QueueUrl,
		MessageBody: aws.String(`{"hello":"world"}`),
	}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            q.QueueUrl,
		MaxNumberOfMessages: 10,
		WaitTimeSeconds:     1,
	})
	if err != nil {
		t.Fatalf("ReceiveMessage: %v", err)
	}
	if len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != `{"hello":"world"}` {
		t.Fatalf("ReceiveMessage: %+v", out.Messages)
	}
	if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl:      q.QueueUrl,
		ReceiptHandle: out.Messages[0].ReceiptHandle,
	}); err != nil {
		t.Fatalf("DeleteMessage: %v", err)
	}
	out, err = client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 0})
	if err != nil {
		t.Fatalf("ReceiveMessage after DeleteMessage: %v", err)
	}
	if len(out.Messages) != 0 {
		t.Fatalf("ReceiveMessage after DeleteMessage: %d messages", len(out.Messages))
	}

	_, err = client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name(t) + "-missing")})
	if _, ok := errors.AsType[*sqstypes.QueueDoesNotExist](err); !ok {
		t.Fatalf("GetQueueUrl of a missing queue: %v, want QueueDoesNotExist", err)
	}
}

func TestAutoScaling(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cfg := Config(shared.URL())
	group := name(t)

	ids, err := CreateGroup(ctx, cfg, Group{
		Name: group,
		Size: 2,
		Hooks: []Hook{{
			Name:             "drain",
			HeartbeatTimeout: 300 * time.Second,
			DefaultResult:    ResultContinue,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 {
		t.Fatalf("CreateGroup: instances %v, want 2", ids)
	}

	asc := autoscaling.NewFromConfig(cfg)
	hooks, err := asc.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{
		AutoScalingGroupName: aws.String(group),
	})
	if err != nil {
		t.Fatalf("DescribeLifecycleHooks: %v", err)
	}
	if len(hooks.LifecycleHooks) != 1 ||
		aws.ToString(hooks.LifecycleHooks[0].LifecycleTransition) != "autoscaling:EC2_INSTANCE_TERMINATING" ||
		aws.ToInt32(hooks.LifecycleHooks[0].HeartbeatTimeout) != 300 {
		t.Fatalf("DescribeLifecycleHooks: %+v", hooks.LifecycleHooks)
	}

	inst, err := asc.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{
		InstanceIds: ids,
	})
	if err != nil {
		t.Fatalf("DescribeAutoScalingInstances: %v", err)
	}
	if len(inst.AutoScalingInstances) != 2 {
		t.Fatalf("DescribeAutoScalingInstances: %+v", inst.AutoScalingInstances)
	}
	for _, i := range inst.AutoScalingInstances {
		if aws.ToString(i.AutoScalingGroupName) != group || aws.ToString(i.LifecycleState) != "InService" {
			t.Errorf("instance %s: group %q, state %q", aws.ToString(i.InstanceId),
				aws.ToString(i.AutoScalingGroupName), aws.ToString(i.LifecycleState))
		}
	}

	// The instances are EC2 instances too, tagged with their group.
	ec2c := ec2.NewFromConfig(cfg)
	desc, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatalf("DescribeInstances: %v", err)
	}
	n := 0
	for _, r := range desc.Reservations {
		for _, i := range r.Instances {
			n++
			if aws.ToString(i.PrivateDnsName) == "" {
				t.Errorf("instance %s has no PrivateDnsName", aws.ToString(i.InstanceId))
			}
			found := false
			for _, tag := range i.Tags {
				found = found || aws.ToString(tag.Key) == "aws:autoscaling:groupName" && aws.ToString(tag.Value) == group
			}
			if !found {
				t.Errorf("instance %s has no aws:autoscaling:groupName tag: %+v", aws.ToString(i.InstanceId), i.Tags)
			}
		}
	}
	if n != 2 {
		t.Fatalf("DescribeInstances: %d instances, want 2", n)
	}
}

// TestMotoLacksLifecycleCalls checks that moto still does not implement
// the two calls the proxy answers: if it ever does, the proxy should be
// revisited.
func TestMotoLacksLifecycleCalls(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	asc := autoscaling.NewFromConfig(Config(shared.URL()), func(o *autoscaling.Options) {
		o.RetryMaxAttempts = 1
	})
	_, err := asc.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String("g"),
		LifecycleHookName:     aws.String("h"),
		InstanceId:            aws.String("i-0123456789abcdef0"),
		LifecycleActionResult: aws.String(ResultContinue),
	})
	if err == nil {
		t.Fatal("moto answered CompleteLifecycleAction: the proxy may no longer be needed")
	}
	t.Logf("moto: %v", fmt.Sprint(err))
}
