package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/emulators/moto"
)

// A node without a provider ID is found by the instance's private DNS name
// from EC2 DescribeInstances.
func TestQueueMapsByPrivateDNSName(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	ids, err := moto.CreateGroup(ctx, e.cfg, moto.Group{Name: "dns-" + time.Now().Format("150405.000000")[7:], Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ec2.NewFromConfig(e.cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	dns := aws.ToString(out.Reservations[0].Instances[0].PrivateDnsName)
	if dns == "" {
		t.Fatal("moto gave the instance no private DNS name")
	}
	if _, err := env.AddNode(ctx, dns); err != nil {
		t.Fatal(err)
	}
	e.send(t, spotWarning(ids[0]))
	e.startProcessor(t, "dns")
	waitNode(t, dns, drainedNode)
	eventually(t, "the message deleted", func() bool { return e.depth(t) == 0 })
}

// A drain that cannot finish (a PDB that never allows a disruption, under
// the respect policy) ends at its deadline, and the lifecycle action is
// completed with ABANDON when the operator asked for that.
func TestQueueAbandonsWhenDrainFails(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	guardedPod(t, ns, m.node, pool)
	// The action began 50 s ago: 10 s are left of a 1-minute lifecycle bound.
	e.send(t, terminateHookAt(m, time.Now().Add(-50*time.Second)))
	p := e.startProcessor(t, "abandon", "--lifecycle-failure-result=ABANDON", "--lifecycle-deadline=1m", "--deadline-margin=1s", "--pdb-deadline-policy=respect")
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != "ABANDON" || c.Token != m.token {
		t.Fatalf("completion %+v, want ABANDON", c)
	}
	n := waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	if drainedNode(n) {
		t.Fatal("node recorded as drained though the PDB held its pod")
	}
	waitEvents(t, "default", m.node, "DrainFailed")
	eventually(t, "the timeout counted", func() bool {
		return p.metric(t, "lastcall_drain_duration_seconds", map[string]string{"result": "timeout"}) == 1 &&
			p.metric(t, "lastcall_lifecycle_actions_completed_total", map[string]string{"result": "ABANDON", "outcome": "success"}) == 1
	})
}
