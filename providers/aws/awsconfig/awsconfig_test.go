package awsconfig_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/lastcall/lastcall/providers/aws/awsconfig"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// isolate makes the SDK see only the test's environment: static
// credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and no shared
// files, profile, region or endpoint of the machine's.
func isolate(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "test",
		"AWS_SECRET_ACCESS_KEY":       "test",
		"AWS_SESSION_TOKEN":           "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_RETRY_MODE":              "",
		"AWS_MAX_ATTEMPTS":            "",
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestLoadAgainstMoto(t *testing.T) {
	isolate(t)
	ctx := testCtx(t)
	s, err := moto.Start(ctx)
	if err != nil {
		t.Fatalf("moto.Start: %v", err)
	}
	t.Cleanup(s.Stop)

	o := awsconfig.Options{Region: "eu-west-1", Endpoint: s.URL()}
	cfg, err := awsconfig.Load(ctx, o)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Region != "eu-west-1" {
		t.Errorf("Region = %q", cfg.Region)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("retrieving credentials: %v", err)
	}
	if creds.AccessKeyID != "test" || creds.Source != "EnvConfigCredentials" {
		t.Errorf("credentials %q from %q, want the environment's", creds.AccessKeyID, creds.Source)
	}

	sqsc := o.SQS(cfg)
	asc := o.AutoScaling(cfg)
	ec2c := o.EC2(cfg)

	// Retries stay the SDK's default: standard, 3 attempts.
	for name, opts := range map[string]struct {
		mode     aws.RetryMode
		attempts int
		endpoint *string
	}{
		"sqs":         {sqsc.Options().RetryMode, sqsc.Options().Retryer.MaxAttempts(), sqsc.Options().BaseEndpoint},
		"autoscaling": {asc.Options().RetryMode, asc.Options().Retryer.MaxAttempts(), asc.Options().BaseEndpoint},
		"ec2":         {ec2c.Options().RetryMode, ec2c.Options().Retryer.MaxAttempts(), ec2c.Options().BaseEndpoint},
	} {
		if opts.mode != aws.RetryModeStandard || opts.attempts != 3 {
			t.Errorf("%s: retry mode %q, %d attempts; want standard, 3", name, opts.mode, opts.attempts)
		}
		if aws.ToString(opts.endpoint) != s.URL() {
			t.Errorf("%s: BaseEndpoint %q, want %q", name, aws.ToString(opts.endpoint), s.URL())
		}
	}

	// Every client reaches moto.
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("lastcall")})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	if _, err := sqsc.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("x")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	msgs, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 1})
	if err != nil || len(msgs.Messages) != 1 {
		t.Fatalf("ReceiveMessage: %v, %d messages", err, len(msgs.Messages))
	}

	ids, err := moto.CreateGroup(ctx, cfg, moto.Group{Name: "nodes", Size: 1, AvailabilityZone: "eu-west-1a"})
	if err != nil {
		t.Fatal(err)
	}
	groups, err := asc.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{"nodes"},
	})
	if err != nil || len(groups.AutoScalingGroups) != 1 {
		t.Fatalf("DescribeAutoScalingGroups: %v, %+v", err, groups)
	}
	inst, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil || len(inst.Reservations) != 1 {
		t.Fatalf("DescribeInstances: %v, %+v", err, inst)
	}
}

// TestHelpersSetEndpoint checks that the helpers send clients to Endpoint
// even with a configuration that was not loaded by Load.
func TestHelpersSetEndpoint(t *testing.T) {
	t.Parallel()
	cfg := aws.Config{Region: "us-east-1"}
	o := awsconfig.Options{Endpoint: "http://127.0.0.1:1"}
	if got := aws.ToString(o.SQS(cfg).Options().BaseEndpoint); got != o.Endpoint {
		t.Errorf("SQS BaseEndpoint %q", got)
	}
	if got := aws.ToString(o.AutoScaling(cfg).Options().BaseEndpoint); got != o.Endpoint {
		t.Errorf("AutoScaling BaseEndpoint %q", got)
	}
	if got := aws.ToString(o.EC2(cfg).Options().BaseEndpoint); got != o.Endpoint {
		t.Errorf("EC2 BaseEndpoint %q", got)
	}
	if got := (awsconfig.Options{}).SQS(cfg).Options().BaseEndpoint; got != nil {
		t.Errorf("without Endpoint: BaseEndpoint %q", *got)
	}
}

func TestLoadNeedsRegion(t *testing.T) {
	isolate(t)
	if _, err := awsconfig.Load(testCtx(t), awsconfig.Options{}); err == nil {
		t.Fatal("Load without a region succeeded")
	}
	t.Setenv("AWS_REGION", "ap-south-1")
	cfg, err := awsconfig.Load(testCtx(t), awsconfig.Options{})
	if err != nil {
		t.Fatalf("Load with AWS_REGION: %v", err)
	}
	if cfg.Region != "ap-south-1" || cfg.BaseEndpoint != nil {
		t.Fatalf("Region %q, BaseEndpoint %v", cfg.Region, cfg.BaseEndpoint)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"", true},
		{"http://127.0.0.1:5000", true},
		{"https://vpce-123.autoscaling.us-east-1.vpce.amazonaws.com", true},
		{"127.0.0.1:5000", false},
		{"ftp://example.com", false},
		{"http://", false},
		{"://x", false},
	} {
		err := awsconfig.Options{Region: "us-east-1", Endpoint: tc.endpoint}.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok %v", tc.endpoint, err, tc.ok)
		}
	}
}
