package moto

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	clocktesting "k8s.io/utils/clock/testing"
)

const hook = "drain"

// fixture is moto with a group of two instances and a hook, behind a
// started proxy.
type fixture struct {
	proxy *LifecycleProxy
	group string
	ids   []string
	// asg is the real Auto Scaling client, through the proxy.
	asg *autoscaling.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	group := name(t)
	ids, err := CreateGroup(testCtx(t), Config(shared.URL()), Group{
		Name:  group,
		Size:  2,
		Hooks: []Hook{{Name: hook, HeartbeatTimeout: 300 * time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := NewLifecycleProxy(shared.URL())
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &fixture{proxy: p, group: group, ids: ids, asg: autoscaling.NewFromConfig(Config(p.URL()))}
}

func (f *fixture) register(instance string) string {
	return f.proxy.Register(LifecycleActionState{
		GroupName:  f.group,
		HookName:   hook,
		InstanceID: instance,
		Transition: "autoscaling:EC2_INSTANCE_TERMINATING",
	})
}

func (f *fixture) complete(ctx context.Context, instance, token, result string) error {
	in := &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(f.group),
		LifecycleHookName:     aws.String(hook),
		InstanceId:            aws.String(instance),
		LifecycleActionResult: aws.String(result),
	}
	if token != "" {
		in.LifecycleActionToken = aws.String(token)
	}
	_, err := f.asg.CompleteLifecycleAction(ctx, in)
	return err
}

func (f *fixture) heartbeat(ctx context.Context, instance, token string) error {
	_, err := f.asg.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(f.group),
		LifecycleHookName:    aws.String(hook),
		InstanceId:           aws.String(instance),
		LifecycleActionToken: aws.String(token),
	})
	return err
}

// attempts counts the proxy's answers to action.
func (f *fixture) attempts(action string) int {
	n := 0
	for _, c := range f.proxy.Calls() {
		if c.Action == action {
			n++
		}
	}
	return n
}

// wantAPIError checks that err is a smithy.APIError with code.
func wantAPIError(t *testing.T, err error, code string) {
	t.Helper()
	apiErr, ok := errors.AsType[smithy.APIError](err)
	if !ok {
		t.Fatalf("error %v (%T), want a smithy.APIError %s", err, err, code)
	}
	if apiErr.ErrorCode() != code {
		t.Fatalf("error code %q (%v), want %q", apiErr.ErrorCode(), err, code)
	}
}

func TestProxyLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	inst := f.ids[0]
	token := f.register(inst)

	for i := 1; i <= 2; i++ {
		if err := f.heartbeat(ctx, inst, token); err != nil {
			t.Fatalf("RecordLifecycleActionHeartbeat %d: %v", i, err)
		}
		if n := f.proxy.Heartbeats(inst); n != i {
			t.Fatalf("Heartbeats = %d, want %d", n, i)
		}
	}
	if _, ok := f.proxy.Completed(inst); ok {
		t.Fatal("Completed before CompleteLifecycleAction")
	}
	if err := f.complete(ctx, inst, token, ResultContinue); err != nil {
		t.Fatalf("CompleteLifecycleAction: %v", err)
	}
	c, ok := f.proxy.Completion(inst)
	if !ok || c.Result != ResultContinue || c.Token != token || c.Source != SourceAPI {
		t.Fatalf("Completion = %+v, %v", c, ok)
	}
	if f.proxy.Active(inst) {
		t.Fatal("the action is still active after CompleteLifecycleAction")
	}

	// The action is gone: a second Complete is a ValidationError, which
	// the SDK does not retry.
	before := f.attempts(ActionCompleteLifecycleAction)
	err := f.complete(ctx, inst, token, ResultContinue)
	wantAPIError(t, err, "ValidationError")
	if !strings.HasSuffix(err.Error(), "No active Lifecycle Action found with instance ID "+inst) {
		t.Errorf("error message: %v", err)
	}
	if n := f.attempts(ActionCompleteLifecycleAction) - before; n != 1 {
		t.Errorf("second Complete: %d attempts, want 1", n)
	}
	wantAPIError(t, f.heartbeat(ctx, inst, token), "ValidationError")

	// Every lifecycle call is recorded.
	calls := f.proxy.Calls()
	if len(calls) != 5 {
		t.Fatalf("Calls: %+v", calls)
	}
	want := []struct {
		action, code string
	}{
		{ActionRecordLifecycleActionHeartbeat, ""},
		{ActionRecordLifecycleActionHeartbeat, ""},
		{ActionCompleteLifecycleAction, ""},
		{ActionCompleteLifecycleAction, "ValidationError"},
		{ActionRecordLifecycleActionHeartbeat, "ValidationError"},
	}
	for i, w := range want {
		c := calls[i]
		if c.Action != w.action || c.ErrorCode != w.code || c.InstanceID != inst || c.Token != token ||
			c.GroupName != f.group || c.HookName != hook || c.At.IsZero() {
			t.Errorf("call %d: %+v, want %s %q", i, c, w.action, w.code)
		}
	}
	if calls[2].Result != ResultContinue || calls[2].Status != http.StatusOK || calls[3].Status != http.StatusBadRequest {
		t.Errorf("calls: %+v", calls)
	}
}

func TestProxyWrongTokenAndUnknownAction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	inst := f.ids[0]
	f.register(inst)

	wantAPIError(t, f.complete(ctx, inst, "00000000-0000-4000-8000-000000000000", ResultContinue), "ValidationError")
	wantAPIError(t, f.heartbeat(ctx, inst, "00000000-0000-4000-8000-000000000000"), "ValidationError")
	// No action for the other instance.
	wantAPIError(t, f.complete(ctx, f.ids[1], "", ResultAbandon), "ValidationError")
	if !f.proxy.Active(inst) {
		t.Fatal("a wrong token ended the action")
	}
	// Without a token, group, hook and instance are enough.
	if err := f.complete(ctx, inst, "", ResultAbandon); err != nil {
		t.Fatalf("CompleteLifecycleAction without a token: %v", err)
	}
	if r, ok := f.proxy.Completed(inst); !ok || r != ResultAbandon {
		t.Fatalf("Completed = %q, %v", r, ok)
	}
}

func TestProxyByTokenOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	inst := f.ids[1]
	token := f.register(inst)
	_, err := f.asg.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(f.group),
		LifecycleHookName:     aws.String(hook),
		LifecycleActionToken:  aws.String(token),
		LifecycleActionResult: aws.String(ResultContinue),
	})
	if err != nil {
		t.Fatalf("CompleteLifecycleAction by token: %v", err)
	}
	if r, ok := f.proxy.Completed(inst); !ok || r != ResultContinue {
		t.Fatalf("Completed = %q, %v", r, ok)
	}
}

func TestProxyInvalidRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	inst := f.ids[0]
	token := f.register(inst)

	// The SDK refuses an invalid result only on the server side.
	wantAPIError(t, f.complete(ctx, inst, token, "MAYBE"), "ValidationError")

	// The SDK checks required parameters itself: send raw requests.
	base := url.Values{
		"Action":               {ActionCompleteLifecycleAction},
		"Version":              {autoScalingVersion},
		"AutoScalingGroupName": {f.group},
		"LifecycleHookName":    {hook},
		"InstanceId":           {inst},
		"LifecycleActionToken": {token},
	}
	for _, tc := range []struct {
		drop, contains string
	}{
		{"LifecycleActionResult", "'lifecycleActionResult'"},
		{"AutoScalingGroupName", "'autoScalingGroupName'"},
		{"LifecycleHookName", "'lifecycleHookName'"},
	} {
		form := url.Values{"LifecycleActionResult": {ResultContinue}}
		for k, v := range base {
			if k != tc.drop {
				form[k] = v
			}
		}
		delete(form, tc.drop)
		status, body := postForm(t, f.proxy.URL(), form)
		if status != http.StatusBadRequest || !strings.Contains(body, "<Code>ValidationError</Code>") ||
			!strings.Contains(body, tc.contains) {
			t.Errorf("without %s: %d %s", tc.drop, status, body)
		}
	}
	form := url.Values{}
	for k, v := range base {
		form[k] = v
	}
	form.Set("LifecycleActionResult", ResultContinue)
	form.Set("LifecycleHookName", "")
	if status, body := postForm(t, f.proxy.URL(), form); status != http.StatusBadRequest ||
		!strings.Contains(body, "Value '' at 'lifecycleHookName'") {
		t.Errorf("with an empty hook name: %d %s", status, body)
	}
	form.Set("LifecycleHookName", hook)
	form.Set("Action", ActionRecordLifecycleActionHeartbeat)
	form.Del("InstanceId")
	form.Del("LifecycleActionToken")
	if status, body := postForm(t, f.proxy.URL(), form); status != http.StatusBadRequest ||
		!strings.Contains(body, "<Code>ValidationError</Code>") {
		t.Errorf("without instance and token: %d %s", status, body)
	}
	if !f.proxy.Active(inst) {
		t.Fatal("an invalid request ended the action")
	}
}

// postForm posts a raw query-protocol request.
func postForm(t *testing.T, base string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, base+"/", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestProxySDKRetries checks the SDK's default (standard) retryer against
// injected faults: a 500 and Throttling are retried (3 attempts in all),
// a ValidationError is not. Only the backoff between attempts is capped,
// to keep the test short (it is up to 2 s, then 4 s, by default).
func TestProxySDKRetries(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	f.asg = autoscaling.NewFromConfig(Config(f.proxy.URL()), func(o *autoscaling.Options) {
		o.Retryer = retry.AddWithMaxBackoffDelay(retry.NewStandard(), 50*time.Millisecond)
	})
	inst := f.ids[0]
	token := f.register(inst)

	f.proxy.FailNext(ActionRecordLifecycleActionHeartbeat, http.StatusInternalServerError, "InternalFailure", 2)
	start := time.Now()
	if err := f.heartbeat(ctx, inst, token); err != nil {
		t.Fatalf("heartbeat after 2 faults: %v", err)
	}
	t.Logf("2 x 500 then success: %v", time.Since(start))
	if n := f.attempts(ActionRecordLifecycleActionHeartbeat); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}

	f.proxy.FailNext(ActionCompleteLifecycleAction, http.StatusBadRequest, "Throttling", 3)
	wantAPIError(t, f.complete(ctx, inst, token, ResultContinue), "Throttling")
	if n := f.attempts(ActionCompleteLifecycleAction); n != 3 {
		t.Fatalf("%d attempts, want 3 (the SDK's maximum)", n)
	}
	if !f.proxy.Active(inst) {
		t.Fatal("an injected fault ended the action")
	}

	f.proxy.FailNext(ActionCompleteLifecycleAction, http.StatusBadRequest, "ValidationError", 1)
	wantAPIError(t, f.complete(ctx, inst, token, ResultContinue), "ValidationError")
	if n := f.attempts(ActionCompleteLifecycleAction); n != 4 {
		t.Fatalf("%d attempts, want 4 (ValidationError is not retried)", n)
	}
	if err := f.complete(ctx, inst, token, ResultContinue); err != nil {
		t.Fatalf("Complete after the faults: %v", err)
	}
	injected := 0
	for _, c := range f.proxy.Calls() {
		if c.Injected {
			injected++
		}
	}
	if injected != 6 {
		t.Fatalf("%d injected calls recorded, want 6", injected)
	}
}

// TestProxyForwards checks that other calls reach moto, and that faults can
// be injected into them in each protocol.
func TestProxyForwards(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	cfg := Config(f.proxy.URL())

	out, err := f.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{f.group},
	})
	if err != nil {
		t.Fatalf("DescribeAutoScalingGroups through the proxy: %v", err)
	}
	if len(out.AutoScalingGroups) != 1 || len(out.AutoScalingGroups[0].Instances) != 2 {
		t.Fatalf("DescribeAutoScalingGroups: %+v", out.AutoScalingGroups)
	}
	f.proxy.FailNext("DescribeAutoScalingGroups", http.StatusBadRequest, "ValidationError", 1)
	_, err = f.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
	wantAPIError(t, err, "ValidationError")

	ec2c := ec2.NewFromConfig(cfg)
	if _, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: f.ids}); err != nil {
		t.Fatalf("DescribeInstances through the proxy: %v", err)
	}
	f.proxy.FailNext("DescribeInstances", http.StatusBadRequest, "UnauthorizedOperation", 1)
	_, err = ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: f.ids})
	wantAPIError(t, err, "UnauthorizedOperation")

	sqsc := sqs.NewFromConfig(cfg)
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(f.group)})
	if err != nil {
		t.Fatalf("CreateQueue through the proxy: %v", err)
	}
	if !strings.HasPrefix(aws.ToString(q.QueueUrl), f.proxy.URL()) {
		t.Errorf("queue URL %s is not the proxy's", aws.ToString(q.QueueUrl))
	}
	f.proxy.FailNext("ReceiveMessage", http.StatusBadRequest, "AccessDenied", 1)
	_, err = sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl})
	wantAPIError(t, err, "AccessDenied")
	if _, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl}); err != nil {
		t.Fatalf("ReceiveMessage through the proxy: %v", err)
	}
}

// TestProxyTimeout checks that an action without heartbeats ends with its
// default result, and that heartbeats push the timeout back.
func TestProxyTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	clk := clocktesting.NewFakePassiveClock(time.Now())
	f.proxy.WithClock(clk)

	a, b := f.ids[0], f.ids[1]
	tokenA := f.proxy.Register(LifecycleActionState{
		GroupName: f.group, HookName: hook, InstanceID: a,
		HeartbeatTimeout: time.Minute, DefaultResult: ResultContinue,
	})
	tokenB := f.proxy.Register(LifecycleActionState{
		GroupName: f.group, HookName: hook, InstanceID: b,
		HeartbeatTimeout: time.Minute, // default result: ABANDON
	})

	clk.SetTime(clk.Now().Add(50 * time.Second))
	if err := f.heartbeat(ctx, a, tokenA); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(20 * time.Second))
	// b has had no heartbeat for 70 s; a's last was 20 s ago.
	if !f.proxy.Active(a) {
		t.Fatal("a timed out despite its heartbeat")
	}
	c, ok := f.proxy.Completion(b)
	if !ok || c.Result != ResultAbandon || c.Source != SourceTimeout {
		t.Fatalf("b: Completion = %+v, %v", c, ok)
	}
	wantAPIError(t, f.heartbeat(ctx, b, tokenB), "ValidationError")

	// The global timeout, 100 heartbeat timeouts (6000 s), ends a despite
	// heartbeats every 30 s.
	for range 250 {
		clk.SetTime(clk.Now().Add(30 * time.Second))
		if !f.proxy.Active(a) {
			break
		}
		if err := f.heartbeat(ctx, a, tokenA); err != nil {
			t.Fatal(err)
		}
	}
	c, ok = f.proxy.Completion(a)
	if !ok || c.Result != ResultContinue || c.Source != SourceTimeout {
		t.Fatalf("a: Completion = %+v, %v", c, ok)
	}
	if n := f.proxy.Heartbeats(a); n < 190 || n > 200 {
		t.Fatalf("a had %d heartbeats before the global timeout", n)
	}
}

func TestProxyInvalidUpstream(t *testing.T) {
	t.Parallel()
	p := NewLifecycleProxy("not a url")
	if err := p.Start(); err == nil {
		p.Close()
		t.Fatal("Start with an invalid upstream succeeded")
	}
	p.Close() // idempotent, even unstarted
}
