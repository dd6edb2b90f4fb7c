package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// Whose instance a terminate hook is about decides whether lastcall may
// complete it: an instance no node runs is completed only when lastcall
// can tell it is this cluster's (it carries --managed-tag, or
// --complete-unknown-instances says every instance on the queue is).
// Otherwise its message is deleted and its action left to time out, for
// the cluster that owns it to handle from its own queue.

// unjoined creates a group of one instance that no node runs (it never
// joined the cluster), tags the instance with tags, and registers its
// terminate lifecycle action with the lifecycle proxy.
func (e *awsEnv) unjoined(t *testing.T, tags map[string]string) member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	name := fmt.Sprintf("asg-unjoined-%d", time.Now().UnixNano()%1_000_000_000)
	ids, err := moto.CreateGroup(ctx, e.cfg, moto.Group{Name: name, Size: 1,
		Hooks: []moto.Hook{{Name: "drain", HeartbeatTimeout: 300 * time.Second}}})
	if err != nil {
		t.Fatalf("creating group: %v", err)
	}
	m := member{group: name, instance: ids[0]}
	if len(tags) > 0 {
		var ts []ec2types.Tag
		for k, v := range tags {
			ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		if _, err := ec2.NewFromConfig(e.cfg).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{m.instance}, Tags: ts}); err != nil {
			t.Fatal(err)
		}
	}
	m.token = e.proxy.Register(moto.LifecycleActionState{GroupName: name, HookName: "drain", InstanceID: m.instance,
		Transition: "autoscaling:EC2_INSTANCE_TERMINATING"})
	return m
}

// ghost registers a terminate lifecycle action for an instance EC2 does
// not know (one of another account, say).
func (e *awsEnv) ghost(id string) member {
	m := member{group: "asg-elsewhere", instance: id}
	m.token = e.proxy.Register(moto.LifecycleActionState{GroupName: m.group, HookName: "drain", InstanceID: id,
		Transition: "autoscaling:EC2_INSTANCE_TERMINATING"})
	return m
}

// waitDeleted waits until the queue is empty and as many messages were
// deleted as want counts, then checks the count of each reason.
func waitDeleted(t *testing.T, e *awsEnv, p *agent, want map[string]float64) {
	t.Helper()
	var total float64
	for _, n := range want {
		total += n
	}
	eventually(t, fmt.Sprintf("%v messages deleted", total), func() bool {
		return p.metric(t, "lastcall_queue_messages_deleted_total", nil) >= total && e.depth(t) == 0
	})
	for reason, n := range want {
		if got := p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": reason}); got != n {
			t.Errorf("deleted{reason=%s} = %v, want %v", reason, got, n)
		}
	}
}

// wantLeftAlone checks that no CompleteLifecycleAction was made for the
// members and that their actions are still active.
func wantLeftAlone(t *testing.T, e *awsEnv, ms ...member) {
	t.Helper()
	for _, m := range ms {
		for _, c := range e.proxy.Calls() {
			if c.Action == moto.ActionCompleteLifecycleAction && c.InstanceID == m.instance {
				t.Errorf("CompleteLifecycleAction %s made for %s, which lastcall cannot tell is this cluster's", c.Result, m.instance)
			}
		}
		if !e.proxy.Active(m.instance) {
			c, _ := e.proxy.Completion(m.instance)
			t.Errorf("lifecycle action of %s no longer active: %+v", m.instance, c)
		}
	}
}

// Without --managed-tag, a terminate hook for an instance no node runs may
// be another cluster's: its message is deleted as unknown-instance and its
// lifecycle action is not completed.
func TestQueueUnknownInstanceHookLeftAlone(t *testing.T) {
	e := newAWSEnv(t)
	m := e.unjoined(t, nil)
	e.send(t, terminateHook(m))
	p := e.startProcessor(t, "tenancy-unknown")
	waitDeleted(t, e, p, map[string]float64{"unknown-instance": 1})
	wantLeftAlone(t, e, m)
	if got := p.metric(t, "lastcall_lifecycle_completions_total", nil); got != 0 {
		t.Errorf("lastcall_lifecycle_completions_total = %v, want 0", got)
	}
}

// With --managed-tag, the terminate hook of a tagged instance that never
// joined the cluster is this cluster's: it is completed with CONTINUE,
// once, so the scale-in does not wait for the hook's timeout.
func TestQueueTaggedUnjoinedHookCompleted(t *testing.T) {
	e := newAWSEnv(t)
	tag := fmt.Sprintf("lastcall.io/e2e-tenancy-%d", time.Now().UnixNano())
	m := e.unjoined(t, map[string]string{tag: "owned"})
	e.send(t, terminateHook(m))
	p := e.startProcessor(t, "tenancy-tagged", "--managed-tag="+tag+"=owned")
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	waitDeleted(t, e, p, map[string]float64{"no-node": 1})
	wantCompletedOnce(t, e, m, "CONTINUE")
	if got := p.metric(t, "lastcall_lifecycle_completions_total", map[string]string{"result": "CONTINUE", "drain": "not_applicable"}); got != 1 {
		t.Errorf("completions{CONTINUE,not_applicable} = %v, want 1", got)
	}
}

// With --managed-tag, neither the hook of an untagged instance (another
// cluster's) nor that of an instance EC2 does not know is completed.
func TestQueueManagedTagLeavesOthersHooks(t *testing.T) {
	e := newAWSEnv(t)
	tag := fmt.Sprintf("lastcall.io/e2e-tenancy-%d", time.Now().UnixNano())
	untagged := e.unjoined(t, map[string]string{tag: "someone-else"}) // the key, not the value
	unknown := e.ghost("i-0badc0ffee0000014")
	e.send(t, terminateHook(untagged))
	e.send(t, terminateHook(unknown))
	p := e.startProcessor(t, "tenancy-others", "--managed-tag="+tag+"=owned")
	waitDeleted(t, e, p, map[string]float64{"not-our-cluster": 1, "unknown-instance": 1})
	wantLeftAlone(t, e, untagged, unknown)
	if got := p.metric(t, "lastcall_lifecycle_completions_total", nil); got != 0 {
		t.Errorf("lastcall_lifecycle_completions_total = %v, want 0", got)
	}
}

// With --complete-unknown-instances (every instance on this queue is this
// cluster's), the hook of an instance no node runs is completed with
// CONTINUE; that of an instance EC2 does not know is still left alone.
func TestQueueCompleteUnknownInstancesOptIn(t *testing.T) {
	e := newAWSEnv(t)
	m := e.unjoined(t, nil)
	unknown := e.ghost("i-0badc0ffee0000015")
	e.send(t, terminateHook(m))
	e.send(t, terminateHook(unknown))
	p := e.startProcessor(t, "tenancy-optin", "--complete-unknown-instances")
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	waitDeleted(t, e, p, map[string]float64{"no-node": 1, "unknown-instance": 1})
	wantCompletedOnce(t, e, m, "CONTINUE")
	wantLeftAlone(t, e, unknown)
}

// --complete-unknown-instances and --managed-tag contradict each other:
// one says every instance is this cluster's, the other only the tagged
// ones.
func TestQueueOwnershipFlagsExclusive(t *testing.T) {
	_, err := app.Parse([]string{"--mode=queue", "--queue-url=http://127.0.0.1:1/q", "--pod-name=p", "--pod-namespace=ns",
		"--managed-tag=kubernetes.io/cluster/prod", "--complete-unknown-instances"},
		func(string) (string, bool) { return "", false }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--complete-unknown-instances") || !strings.Contains(err.Error(), "--managed-tag") {
		t.Fatalf("parse error %v, want one naming --complete-unknown-instances and --managed-tag", err)
	}
}
