package moto

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Region is the region the helpers use; moto accepts any.
const Region = "us-east-1"

// imageID is the launch template's AMI. moto does not check that it exists.
const imageID = "ami-12345678"

// Config returns an SDK configuration for moto (or a LifecycleProxy) at
// endpoint: Region, static test credentials, the SDK's default (standard)
// retryer, and endpoint as every client's BaseEndpoint.
func Config(endpoint string) aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(endpoint),
	}
}

// Group is an Auto Scaling group for CreateGroup.
type Group struct {
	// Name is the group's name (at least 3 characters: the launch template
	// is named after it).
	Name string
	// Size is the number of instances (min = max = desired); 1 when zero.
	Size int32
	// AvailabilityZone is the group's zone; Region's "a" zone when empty.
	AvailabilityZone string
	// Hooks are put on the group after it is created.
	Hooks []Hook
}

// Hook is a lifecycle hook of a Group.
type Hook struct {
	Name string
	// Transition is autoscaling:EC2_INSTANCE_TERMINATING (when empty) or
	// autoscaling:EC2_INSTANCE_LAUNCHING.
	Transition string
	// HeartbeatTimeout is whole seconds; Auto Scaling's 3600 s when zero.
	HeartbeatTimeout time.Duration
	// DefaultResult is CONTINUE or ABANDON (Auto Scaling's default).
	DefaultResult string
}

// CreateGroup creates, in moto behind cfg, what an Auto Scaling group needs
// there (a launch template named after the group: moto requires a launch
// template, a launch configuration, an instance or a mixed instances
// policy, and an Availability Zone or a subnet), the group itself with its
// instances, and its hooks. It returns the group's instance IDs, sorted.
func CreateGroup(ctx context.Context, cfg aws.Config, g Group) ([]string, error) {
	if g.Size == 0 {
		g.Size = 1
	}
	if g.AvailabilityZone == "" {
		g.AvailabilityZone = Region + "a"
	}
	ec2c := ec2.NewFromConfig(cfg)
	asc := autoscaling.NewFromConfig(cfg)
	lt := "lt-" + g.Name
	if _, err := ec2c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(lt),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId:      aws.String(imageID),
			InstanceType: ec2types.InstanceTypeT3Micro,
		},
	}); err != nil {
		return nil, fmt.Errorf("creating launch template %s: %w", lt, err)
	}
	if _, err := asc.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(g.Name),
		MinSize:              aws.Int32(g.Size),
		MaxSize:              aws.Int32(g.Size),
		DesiredCapacity:      aws.Int32(g.Size),
		AvailabilityZones:    []string{g.AvailabilityZone},
		LaunchTemplate: &astypes.LaunchTemplateSpecification{
			LaunchTemplateName: aws.String(lt),
			Version:            aws.String("$Latest"),
		},
	}); err != nil {
		return nil, fmt.Errorf("creating Auto Scaling group %s: %w", g.Name, err)
	}
	for _, h := range g.Hooks {
		in := &autoscaling.PutLifecycleHookInput{
			AutoScalingGroupName: aws.String(g.Name),
			LifecycleHookName:    aws.String(h.Name),
			LifecycleTransition:  aws.String(h.Transition),
		}
		if h.Transition == "" {
			in.LifecycleTransition = aws.String("autoscaling:EC2_INSTANCE_TERMINATING")
		}
		if h.HeartbeatTimeout > 0 {
			in.HeartbeatTimeout = aws.Int32(int32(h.HeartbeatTimeout / time.Second))
		}
		if h.DefaultResult != "" {
			in.DefaultResult = aws.String(h.DefaultResult)
		}
		if _, err := asc.PutLifecycleHook(ctx, in); err != nil {
			return nil, fmt.Errorf("putting lifecycle hook %s on %s: %w", h.Name, g.Name, err)
		}
	}
	out, err := asc.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{g.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("describing Auto Scaling group %s: %w", g.Name, err)
	}
	if len(out.AutoScalingGroups) != 1 {
		return nil, fmt.Errorf("describing Auto Scaling group %s: %d groups found", g.Name, len(out.AutoScalingGroups))
	}
	var ids []string
	for _, i := range out.AutoScalingGroups[0].Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	sort.Strings(ids)
	return ids, nil
}
