package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lastcall/lastcall/pkg/node"
)

// attachVolumes creates n VolumeAttachments of node, as the attach-detach
// controller would for its pods' volumes, marked attached, and removes
// them at the end of the test. No CSI driver runs: the objects alone are
// what lastcall reads.
func attachVolumes(t *testing.T, nodeName string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for i := range n {
		va, err := env.Client.StorageV1().VolumeAttachments().Create(ctx, &storagev1.VolumeAttachment{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("csi-%s-%d", nodeName, i)},
			Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: nodeName,
				Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(fmt.Sprintf("pv-%s-%d", nodeName, i))}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		va.Status.Attached = true
		if _, err := env.Client.StorageV1().VolumeAttachments().UpdateStatus(ctx, va, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, va.Name)
		t.Cleanup(func() {
			_ = env.Client.StorageV1().VolumeAttachments().Delete(context.Background(), va.Name, metav1.DeleteOptions{})
		})
	}
	return names
}

// A drained node whose volumes are still attached is not let go at once:
// the terminate lifecycle action is completed only once its
// VolumeAttachments are detached (here, deleted by the test, as the
// attach-detach controller does once the attacher has detached them),
// with heartbeats meanwhile and a VolumesDetached Event.
func TestCompletionWaitsForVolumesToDetach(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	create(t, deployment(ns, "db", 1, map[string]string{"kubernetes.io/hostname": m.node}, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, m.node)) == 1 })
	vas := attachVolumes(t, m.node, 2)

	p := e.startProcessor(t, "volumes")
	e.send(t, terminateHook(m))
	waitNode(t, m.node, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	// Drained: heartbeats go on while the volumes stay attached.
	after := e.proxy.Heartbeats(m.instance)
	eventually(t, "3 more heartbeats, or the action's end", func() bool {
		_, done := e.proxy.Completed(m.instance)
		return done || e.proxy.Heartbeats(m.instance) >= after+3
	})
	if c, done := e.proxy.Completion(m.instance); done {
		t.Fatalf("lifecycle action completed (%s) with the node's volumes still attached", c.Result)
	}

	// One detaches (status first, then the object goes), then the other.
	va, err := env.Client.StorageV1().VolumeAttachments().Get(context.Background(), vas[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	va.Status.Attached = false
	if _, err := env.Client.StorageV1().VolumeAttachments().UpdateStatus(context.Background(), va, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range vas {
		if err := env.Client.StorageV1().VolumeAttachments().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	if c, _ := e.proxy.Completion(m.instance); c.Result != "CONTINUE" {
		t.Fatalf("completion %+v, want CONTINUE", c)
	}
	waitEvents(t, "default", m.node, "VolumesDetached")
	p.checkMetrics(t, []metricWant{
		{"lastcall_volume_detach_waits_total", map[string]string{"outcome": "detached"}, 1},
		{"lastcall_volume_detach_seconds", nil, 1},
	})
}

// Volumes that never detach hold the completion only until the drain's
// deadline: here --lifecycle-deadline's minute, counted from a hook sent
// 50 s ago. The action is then completed, and a Warning names what was
// left attached.
func TestCompletionGoesAheadAtTheDeadlineWithVolumesAttached(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	create(t, deployment(ns, "db", 1, map[string]string{"kubernetes.io/hostname": m.node}, 1), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, m.node)) == 1 })
	vas := attachVolumes(t, m.node, 1)

	p := e.startProcessor(t, "volumes-stuck", "--lifecycle-deadline=1m")
	sent := time.Now().Add(-50 * time.Second)
	e.send(t, terminateHookAt(m, sent))
	eventually(t, "the lifecycle action completed", func() bool { _, ok := e.proxy.Completed(m.instance); return ok })
	c, _ := e.proxy.Completion(m.instance)
	if c.Result != "CONTINUE" {
		t.Fatalf("completion %+v, want CONTINUE", c)
	}
	if deadline := sent.Add(time.Minute); c.At.Before(deadline.Add(-time.Second)) {
		t.Errorf("completed at %s, before the deadline %s with a volume still attached", c.At, deadline)
	}
	evs := waitEvents(t, "default", m.node, "VolumesStillAttached")
	if msg := evs[len(evs)-1].Message; !strings.Contains(msg, vas[0]) {
		t.Errorf("VolumesStillAttached %q does not name %s", msg, vas[0])
	}
	p.checkMetrics(t, []metricWant{
		{"lastcall_volume_detach_waits_total", map[string]string{"outcome": "deadline"}, 1},
	})
}

// With --out-of-service-taint, an instance state change to terminated
// marks the instance's node node.kubernetes.io/out-of-service, so that
// Kubernetes deletes its pods and detaches its volumes at once; stopping,
// which the instance comes back from, does not. Without the flag, neither
// does.
func TestTerminatedInstanceMarkedOutOfService(t *testing.T) {
	e := newAWSEnv(t)
	ms := e.group(t, 3, map[string]string{"pool": newNamespace(t)})
	p := e.startProcessor(t, "out-of-service", "--out-of-service-taint")
	stateChange := func(m member, state string) string {
		return eventBridge("aws.ec2", "EC2 Instance State-change Notification", []string{instanceARN(m.instance)},
			map[string]any{"instance-id": m.instance, "state": state})
	}
	e.send(t, stateChange(ms[0], "terminated"))
	e.send(t, stateChange(ms[1], "stopping"))
	n := waitNode(t, ms[0].node, func(n *corev1.Node) bool { return hasTaint(n, node.TaintOutOfService.Key) })
	for _, taint := range n.Spec.Taints {
		if taint.Key == node.TaintOutOfService.Key && (taint.Value != "nodeshutdown" || taint.Effect != corev1.TaintEffectNoExecute) {
			t.Errorf("taint %s=%s:%s, want nodeshutdown:NoExecute", taint.Key, taint.Value, taint.Effect)
		}
	}
	if n := waitNode(t, ms[1].node, func(n *corev1.Node) bool { return n.Spec.Unschedulable }); hasTaint(n, node.TaintOutOfService.Key) {
		t.Error("a stopping instance's node was marked out of service")
	}
	p.checkMetrics(t, []metricWant{{"lastcall_out_of_service_taints_total", map[string]string{"outcome": "added"}, 1}})

	// A replica without the flag leaves a terminated node's taints.
	p.stop()
	e.startProcessor(t, "in-service")
	e.send(t, stateChange(ms[2], "terminated"))
	if n := waitNode(t, ms[2].node, func(n *corev1.Node) bool { return n.Spec.Unschedulable }); hasTaint(n, node.TaintOutOfService.Key) {
		t.Error("a terminated instance's node was marked out of service without --out-of-service-taint")
	}
}
