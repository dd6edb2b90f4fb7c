// Package instances maps EC2 instances to the Kubernetes nodes they run, and
// tells whether an instance belongs to this cluster.
package instances

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

var (
	// ErrNotOurs: the instance lacks the managed tag; another cluster owns
	// it.
	ErrNotOurs = errors.New("instance is not managed by this cluster")
	// ErrNoNode: the instance is this cluster's (it carries the managed
	// tag, or every instance is), but no node runs it: it never joined,
	// or is already gone.
	ErrNoNode = errors.New("no node for this cluster's instance")
	// ErrUnknownInstance: no node runs the instance and nothing tells that
	// it is this cluster's, or EC2 does not know it (it is of another
	// account or region).
	ErrUnknownInstance = errors.New("no node for instance, and nothing tells it is this cluster's")
)

// Ownership says which instances are this cluster's. An instance a node
// runs always is, unless Tag says otherwise.
type Ownership struct {
	// Tag is "key" or "key=value": only instances carrying it are this
	// cluster's, whether a node runs them or not. Empty: no tag is needed.
	Tag string
	// All says every instance EC2 knows is this cluster's, even one no
	// node runs. With neither, an instance no node runs is unknown.
	All bool
}

// EC2API is the part of the EC2 client the mapper uses.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

const instanceIndex = "aws-instance-id"

// Mapper finds the node of an instance: from its spec.providerID in the
// node informer's cache first, then by the instance's private DNS name.
type Mapper struct {
	nodes cache.SharedIndexInformer
	ec2   EC2API
	own   Ownership
}

// NewMapper indexes the node informer by instance ID; call it before the
// informer starts.
func NewMapper(nodes cache.SharedIndexInformer, api EC2API, own Ownership) (*Mapper, error) {
	err := nodes.AddIndexers(cache.Indexers{instanceIndex: func(obj any) ([]string, error) {
		if n, ok := obj.(*corev1.Node); ok {
			if id := InstanceID(n.Spec.ProviderID); id != "" {
				return []string{id}, nil
			}
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("indexing nodes by instance: %w", err)
	}
	return &Mapper{nodes: nodes, ec2: api, own: own}, nil
}

// InstanceID extracts the instance ID from an AWS provider ID,
// aws:///<zone>/<instance-id>; "" for anything else.
func InstanceID(providerID string) string {
	rest, ok := strings.CutPrefix(providerID, "aws://")
	if !ok {
		return ""
	}
	id := rest[strings.LastIndexByte(rest, '/')+1:]
	if !strings.HasPrefix(id, "i-") {
		return ""
	}
	return id
}

// NodeFor returns the name of the node running instanceID. It returns
// ErrNotOurs when a managed tag is required and the instance lacks it,
// ErrNoNode when no node runs an instance known to be this cluster's, and
// ErrUnknownInstance when no node runs it and nothing tells whose it is.
func (m *Mapper) NodeFor(ctx context.Context, instanceID string) (string, error) {
	var inst *ec2Instance
	if m.own.Tag != "" {
		i, err := m.describe(ctx, instanceID)
		if err != nil {
			return "", err
		}
		if !i.hasTag(m.own.Tag) {
			return "", fmt.Errorf("%w: %s has no tag %s", ErrNotOurs, instanceID, m.own.Tag)
		}
		inst = i
	}
	if objs, err := m.nodes.GetIndexer().ByIndex(instanceIndex, instanceID); err == nil && len(objs) > 0 {
		return objs[0].(*corev1.Node).Name, nil
	}
	if inst == nil {
		i, err := m.describe(ctx, instanceID)
		if err != nil {
			return "", err
		}
		inst = i
	}
	if inst.privateDNS != "" {
		if _, ok, _ := m.nodes.GetIndexer().GetByKey(inst.privateDNS); ok {
			return inst.privateDNS, nil
		}
	}
	if m.own.Tag != "" || m.own.All {
		return "", fmt.Errorf("%w: %s (private DNS %q)", ErrNoNode, instanceID, inst.privateDNS)
	}
	return "", fmt.Errorf("%w: %s (private DNS %q)", ErrUnknownInstance, instanceID, inst.privateDNS)
}

// Node returns the cached node of that name.
func (m *Mapper) Node(name string) (*corev1.Node, bool) {
	o, ok, err := m.nodes.GetIndexer().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	n, ok := o.(*corev1.Node)
	return n, ok
}

type ec2Instance struct {
	privateDNS string
	tags       map[string]string
}

func (i *ec2Instance) hasTag(spec string) bool {
	k, v, withValue := strings.Cut(spec, "=")
	got, ok := i.tags[k]
	return ok && (!withValue || got == v)
}

func (m *Mapper) describe(ctx context.Context, id string) (*ec2Instance, error) {
	out, err := m.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "InvalidInstanceID.NotFound" || ae.ErrorCode() == "InvalidInstanceID.Malformed") {
		return nil, fmt.Errorf("%w: %s: %s", ErrUnknownInstance, id, ae.ErrorCode())
	}
	if err != nil {
		return nil, fmt.Errorf("describing instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.InstanceId) != id {
				continue
			}
			inst := &ec2Instance{privateDNS: aws.ToString(in.PrivateDnsName), tags: map[string]string{}}
			for _, t := range in.Tags {
				inst.tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			return inst, nil
		}
	}
	return nil, fmt.Errorf("%w: %s not found by DescribeInstances", ErrUnknownInstance, id)
}
