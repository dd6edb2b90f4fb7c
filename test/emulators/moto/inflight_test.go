package moto

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	clocktesting "k8s.io/utils/clock/testing"
)

// TestLimitInFlight checks the in-flight limit through the SDK: a
// ChangeMessageVisibility that keeps a message invisible up to the limit
// from its receipt passes to moto; one past it is refused with SQS's
// InvalidParameterValue, and the message stays as it was.
func TestLimitInFlight(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	clk := clocktesting.NewFakePassiveClock(time.Now())
	p := NewLifecycleProxy(shared.URL()).WithClock(clk)
	p.LimitInFlight(time.Minute)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	client := sqs.NewFromConfig(Config(p.URL()))
	q, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name(t))})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("m")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 1, VisibilityTimeout: 30})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("ReceiveMessage: %v, %d messages", err, len(out.Messages))
	}
	receipt := out.Messages[0].ReceiptHandle
	change := func(secs int32) error {
		_, err := client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: q.QueueUrl, ReceiptHandle: receipt, VisibilityTimeout: secs})
		return err
	}

	clk.SetTime(clk.Now().Add(30 * time.Second))
	if err := change(30); err != nil {
		t.Fatalf("extending to exactly the limit: %v", err)
	}
	clk.SetTime(clk.Now().Add(20 * time.Second))
	wantAPIError(t, change(30), "InvalidParameterValue")
	if err := change(10); err != nil {
		t.Fatalf("extending within the limit after a refusal: %v", err)
	}
	if n, _ := QueueDepth(ctx, client, *q.QueueUrl); n != 1 {
		t.Fatalf("queue depth %d after the refusal, want the message still there", n)
	}
}
