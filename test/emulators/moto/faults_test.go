package moto

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// TestFaultsSQS checks the SQS faults against the SDK's standard retryer
// (sqs v1.52, awsJson1_0): throttles and 5xx are retried, 3 attempts in
// all, and surface as the typed error when every attempt fails; the
// requests are counted whoever answered them. Only the backoff between
// attempts is capped, to keep the test short.
func TestFaultsSQS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := NewLifecycleProxy(shared.URL())
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	client := sqs.NewFromConfig(Config(p.URL()), func(o *sqs.Options) {
		o.Retryer = retry.AddWithMaxBackoffDelay(retry.NewStandard(), 50*time.Millisecond)
	})
	q, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name(t))})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("m")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}

	// Throttled twice: the third attempt receives.
	p.Inject("ReceiveMessage", SQSThrottled, 2)
	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 1, VisibilityTimeout: 30})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("ReceiveMessage after 2 throttles: %v, %d messages", err, len(out.Messages))
	}
	if n, inj := p.Requests("ReceiveMessage"), p.Injected("ReceiveMessage"); n != 3 || inj != 2 {
		t.Fatalf("ReceiveMessage: %d requests, %d injected; want 3 and 2", n, inj)
	}
	receipt := out.Messages[0].ReceiptHandle

	// A 500 on every attempt: the SDK gives up after 3.
	p.Inject("ChangeMessageVisibility", InternalFailure, 3)
	_, err = client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: q.QueueUrl, ReceiptHandle: receipt, VisibilityTimeout: 30})
	wantAPIError(t, err, "InternalFailure")
	if n := p.Requests("ChangeMessageVisibility"); n != 3 {
		t.Fatalf("ChangeMessageVisibility: %d requests, want 3 (the SDK's maximum)", n)
	}

	// Throttled on every attempt: the typed error.
	p.Inject("ReceiveMessage", SQSThrottled, 3)
	_, err = client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl})
	if _, ok := errors.AsType[*sqstypes.RequestThrottled](err); !ok {
		t.Fatalf("ReceiveMessage throttled 3 times: %v (%T), want *types.RequestThrottled", err, err)
	}
	wantAPIError(t, err, "RequestThrottled")
	if n := p.Requests("ReceiveMessage"); n != 6 {
		t.Fatalf("ReceiveMessage: %d requests, want 6", n)
	}

	// 503 twice: the delete goes through on the third attempt.
	p.Inject("DeleteMessage", ServiceUnavailable, 2)
	if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: receipt}); err != nil {
		t.Fatalf("DeleteMessage after 2 x 503: %v", err)
	}
	if n := p.Requests("DeleteMessage"); n != 3 {
		t.Fatalf("DeleteMessage: %d requests, want 3", n)
	}
	if d, err := QueueDepth(ctx, client, aws.ToString(q.QueueUrl)); err != nil || d != 0 {
		t.Fatalf("queue depth after the delete: %d, %v", d, err)
	}
}

// TestFaultsNoActiveLifecycleAction checks the injected ValidationError of
// a lifecycle call: Auto Scaling's message, one attempt, and the action
// left as it was.
func TestFaultsNoActiveLifecycleAction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	inst := f.ids[0]
	token := f.register(inst)

	f.proxy.Inject(ActionCompleteLifecycleAction, NoActiveLifecycleAction, 1)
	err := f.complete(ctx, inst, token, ResultContinue)
	wantAPIError(t, err, "ValidationError")
	apiErr, _ := errors.AsType[smithy.APIError](err)
	if want := "No active Lifecycle Action found with token " + token; apiErr.ErrorMessage() != want {
		t.Fatalf("message %q, want %q", apiErr.ErrorMessage(), want)
	}
	f.proxy.Inject(ActionRecordLifecycleActionHeartbeat, NoActiveLifecycleAction, 1)
	wantAPIError(t, f.heartbeat(ctx, inst, token), "ValidationError")
	f.proxy.Inject(ActionCompleteLifecycleAction, NoActiveLifecycleAction, 1)
	err = f.complete(ctx, inst, "", ResultContinue)
	if apiErr, _ := errors.AsType[smithy.APIError](err); apiErr == nil ||
		!strings.HasSuffix(apiErr.ErrorMessage(), "found with instance ID "+inst) {
		t.Fatalf("without a token: %v, want the instance ID in the message", err)
	}
	if n, inj := f.proxy.Requests(ActionCompleteLifecycleAction), f.proxy.Injected(ActionCompleteLifecycleAction); n != 2 || inj != 2 {
		t.Fatalf("CompleteLifecycleAction: %d requests, %d injected; want 2 and 2 (not retried)", n, inj)
	}
	if _, done := f.proxy.Completed(inst); done || !f.proxy.Active(inst) {
		t.Fatal("an injected fault ended the action")
	}
	if err := f.complete(ctx, inst, token, ResultContinue); err != nil {
		t.Fatalf("Complete after the faults: %v", err)
	}
}
