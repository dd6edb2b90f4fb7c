package instances

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestInstanceID(t *testing.T) {
	for in, want := range map[string]string{
		"aws:///us-east-1a/i-0123456789abcdef0": "i-0123456789abcdef0",
		"aws://us-east-1a/i-0abc":               "i-0abc",
		"gce://project/zone/name":               "",
		"aws:///us-east-1a/":                    "",
		"":                                      "",
		"kwok://i-0abc":                         "",
	} {
		if got := InstanceID(in); got != want {
			t.Errorf("InstanceID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHasTag(t *testing.T) {
	i := &ec2Instance{tags: map[string]string{"kubernetes.io/cluster/prod": "owned", "team": ""}}
	for spec, want := range map[string]bool{
		"kubernetes.io/cluster/prod":        true,
		"kubernetes.io/cluster/prod=owned":  true,
		"kubernetes.io/cluster/prod=shared": false,
		"kubernetes.io/cluster/dev":         false,
		"team":                              true,
		"team=":                             true,
	} {
		if got := i.hasTag(spec); got != want {
			t.Errorf("hasTag(%q) = %v, want %v", spec, got, want)
		}
	}
}

// fakeEC2 knows the instances of its map by ID; others are NotFound.
type fakeEC2 map[string]ec2types.Instance

func (f fakeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	i, ok := f[in.InstanceIds[0]]
	if !ok {
		return nil, &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound", Message: "not found"}
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{i}}}}, nil
}

func TestNodeForOwnership(t *testing.T) {
	instance := func(id, dns string, tags ...string) ec2types.Instance {
		i := ec2types.Instance{InstanceId: aws.String(id), PrivateDnsName: aws.String(dns)}
		for _, k := range tags {
			i.Tags = append(i.Tags, ec2types.Tag{Key: aws.String(k), Value: aws.String("owned")})
		}
		return i
	}
	api := fakeEC2{
		"i-joined":          instance("i-joined", "ip-10-0-0-1", "cluster"),
		"i-joined-untagged": instance("i-joined-untagged", "ip-10-0-0-2"),
		"i-by-dns":          instance("i-by-dns", "ip-10-0-0-3"),
		"i-unjoined":        instance("i-unjoined", "ip-10-0-0-4", "cluster"),
		"i-unjoined-other":  instance("i-unjoined-other", "ip-10-0-0-5"),
	}
	nodes := []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "joined"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-joined"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "joined-untagged"}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-joined-untagged"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ip-10-0-0-3"}},
	}
	type want struct {
		node string
		err  error
	}
	for _, c := range []struct {
		name string
		own  Ownership
		want map[string]want
	}{
		{"no tag", Ownership{}, map[string]want{
			"i-joined": {node: "joined"}, "i-joined-untagged": {node: "joined-untagged"}, "i-by-dns": {node: "ip-10-0-0-3"},
			"i-unjoined": {err: ErrUnknownInstance}, "i-unjoined-other": {err: ErrUnknownInstance}, "i-nowhere": {err: ErrUnknownInstance},
		}},
		{"tag", Ownership{Tag: "cluster=owned"}, map[string]want{
			"i-joined": {node: "joined"}, "i-joined-untagged": {err: ErrNotOurs}, "i-by-dns": {err: ErrNotOurs},
			"i-unjoined": {err: ErrNoNode}, "i-unjoined-other": {err: ErrNotOurs}, "i-nowhere": {err: ErrUnknownInstance},
		}},
		{"all", Ownership{All: true}, map[string]want{
			"i-joined": {node: "joined"}, "i-joined-untagged": {node: "joined-untagged"}, "i-by-dns": {node: "ip-10-0-0-3"},
			"i-unjoined": {err: ErrNoNode}, "i-unjoined-other": {err: ErrNoNode}, "i-nowhere": {err: ErrUnknownInstance},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			inf := cache.NewSharedIndexInformer(&cache.ListWatch{}, &corev1.Node{}, 0, cache.Indexers{})
			m, err := NewMapper(inf, api, c.own)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if err := inf.GetIndexer().Add(n); err != nil {
					t.Fatal(err)
				}
			}
			for id, w := range c.want {
				got, err := m.NodeFor(context.Background(), id)
				if got != w.node || !errors.Is(err, w.err) || (w.err == nil && err != nil) {
					t.Errorf("NodeFor(%s) = %q, %v; want %q, %v", id, got, err, w.node, w.err)
				}
			}
		})
	}
}
