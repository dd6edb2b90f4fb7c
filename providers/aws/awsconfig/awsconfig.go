// Package awsconfig loads the AWS SDK configuration lastcall's AWS clients
// share, and builds those clients (SQS, Auto Scaling, EC2).
//
// Credentials come from the SDK's default chain: environment variables, the
// shared files, web identity (IRSA), the container credentials endpoint (EKS
// Pod Identity) and the instance role, in the SDK's order. Retries are the
// SDK's default: the standard retryer, 3 attempts, exponential backoff with
// jitter, and a retry quota. An Endpoint (moto in the tests, or a proxy)
// replaces every service's endpoint.
package awsconfig

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Options say where lastcall's AWS clients go.
type Options struct {
	// Region is the AWS region. Empty: the SDK's chain (AWS_REGION,
	// AWS_DEFAULT_REGION, the shared config file) must name one.
	Region string
	// Endpoint, when set, is the base URL of every service client, e.g.
	// "http://127.0.0.1:5000" for moto. Empty: AWS's endpoints.
	Endpoint string
}

// Validate checks that Endpoint, if set, is an absolute http or https URL.
func (o Options) Validate() error {
	if o.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(o.Endpoint)
	if err != nil {
		return fmt.Errorf("AWS endpoint %q: %w", o.Endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("AWS endpoint %q: not an absolute http or https URL", o.Endpoint)
	}
	return nil
}

// Load returns the SDK's default configuration with o's Region and, when o
// has one, its Endpoint as the BaseEndpoint of every client built from it.
// ctx bounds loading the configuration only: credentials are fetched on a
// client's first call.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	if err := o.Validate(); err != nil {
		return aws.Config{}, err
	}
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("loading the AWS configuration: no region: set the region option or AWS_REGION")
	}
	if o.Endpoint != "" {
		cfg.BaseEndpoint = aws.String(o.Endpoint)
	}
	return cfg, nil
}

// SQS returns an SQS client for cfg, sent to o.Endpoint when it is set.
func (o Options) SQS(cfg aws.Config) *sqs.Client {
	return sqs.NewFromConfig(cfg, func(so *sqs.Options) { o.setEndpoint(&so.BaseEndpoint) })
}

// AutoScaling returns an Auto Scaling client for cfg, sent to o.Endpoint
// when it is set.
func (o Options) AutoScaling(cfg aws.Config) *autoscaling.Client {
	return autoscaling.NewFromConfig(cfg, func(ao *autoscaling.Options) { o.setEndpoint(&ao.BaseEndpoint) })
}

// EC2 returns an EC2 client for cfg, sent to o.Endpoint when it is set.
func (o Options) EC2(cfg aws.Config) *ec2.Client {
	return ec2.NewFromConfig(cfg, func(eo *ec2.Options) { o.setEndpoint(&eo.BaseEndpoint) })
}

// setEndpoint sets a client's BaseEndpoint to o.Endpoint, if set.
func (o Options) setEndpoint(base **string) {
	if o.Endpoint != "" {
		*base = aws.String(o.Endpoint)
	}
}
