package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// With --asg-complete-lifecycle, the agent completes its instance's
// terminate lifecycle hook itself. Its target lifecycle state turns
// Terminated; the agent finds the group and its hook through Auto Scaling
// (DescribeAutoScalingInstances and DescribeLifecycleHooks, answered by
// moto), drains to the hook's own timeout (its global timeout, 8 h 20 min,
// bounded by --lifecycle-deadline's 30 min), not 2 minutes, and sends
// heartbeats while a budget keeps the node's pod. Once a replacement runs
// elsewhere and the pod is gone, it completes the hook with CONTINUE, once.
func TestAgentCompletesTheLifecycleHook(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	guarded := guardedPod(t, ns, m.node, pool)
	imds := startAEMM(t, aemm.Config{
		InstanceID: m.instance, MockDelay: aemm.Never, RebalanceDelay: aemm.Never,
		ASGTerminationTriggerTime: aemm.TriggerAfter(time.Second), Events: &aemm.ScheduledEvent{State: "completed"},
	})
	a := startAgent(t, m.node, imds.URL(), "--imds-signals=asg-lifecycle", "--asg-complete-lifecycle",
		"--region="+moto.Region, "--aws-endpoint="+e.proxy.URL(), "--heartbeat-interval=1s")
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/asg-termination") })
	checkDrainDeadline(t, m.node, "(in 29m5", "(in 30m0s)")

	eventually(t, "3 heartbeats, or the action's end", func() bool {
		_, done := e.proxy.Completed(m.instance)
		return done || e.proxy.Heartbeats(m.instance) >= 3
	})
	if c, done := e.proxy.Completion(m.instance); done {
		t.Fatalf("lifecycle action completed (%s) while the node's pod could not leave", c.Result)
	}

	newNode(t, "spare", pool)
	scaleTo(t, ns, "api", 2)
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" {
		t.Fatalf("completion %+v, want CONTINUE", c)
	}
	if n := e.proxy.Requests("CompleteLifecycleAction"); n != 1 {
		t.Errorf("%d CompleteLifecycleAction requests, want 1", n)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Get(context.Background(), guarded.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("hook completed with pod %s still on the node (%v)", guarded.Name, err)
	}
	a.checkMetrics(t, []metricWant{
		{"lastcall_lifecycle_actions_completed_total", map[string]string{"result": "CONTINUE", "outcome": "success"}, 1},
		{"lastcall_pdb_overrides_total", nil, 0},
	})
	if n := a.metric(t, "lastcall_lifecycle_heartbeats_total", map[string]string{"outcome": "success"}); n < 3 {
		t.Errorf("%v heartbeats counted, want at least 3", n)
	}
}
