package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// The scenes of a node's interruption episode: a drain re-planned when a
// more urgent notice comes, several notices drained for once, a node
// drained again after it was released, and holds each mode releases only
// if they are its own.

// stuckPods runs, on the node, one pod its budget never lets go (grace 5
// s) and one free pod, and waits until the budget allows no disruption.
func stuckPods(t *testing.T, ns, nodeName string) {
	t.Helper()
	on := map[string]string{"kubernetes.io/hostname": nodeName}
	create(t, deployment(ns, "stuck", 1, on, 5), env.Client.AppsV1().Deployments(ns).Create)
	create(t, pdb(ns, "stuck", 1), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	create(t, deployment(ns, "free", 1, on, 0), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, nodeName)) == 2 })
	eventually(t, "the budget to allow no disruption", func() bool {
		b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "stuck", metav1.GetOptions{})
		return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 1 && b.Status.DisruptionsAllowed == 0
	})
}

// stuckDeleted waits until lastcall says it deleted the stuck pod past its
// budget (a DisruptionBudgetOverridden Event on the node), and returns when
// the deletion was asked, as the node's pod watch saw it.
func stuckDeleted(t *testing.T, deletions func() []deletion, nodeName string) time.Time {
	t.Helper()
	waitEvents(t, "default", nodeName, "DisruptionBudgetOverridden")
	for _, d := range deletions() {
		if strings.HasPrefix(d.name, "stuck-") {
			return d.at
		}
	}
	t.Fatal("no deletion of the stuck pod seen")
	return time.Time{}
}

// waitReason waits for a lastcall Event of the reason about any object of
// the namespace.
func waitReason(t *testing.T, ns, reason string) {
	t.Helper()
	eventually(t, reason+" in "+ns, func() bool {
		list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range list.Items {
			if e.Reason == reason && e.Source.Component == "lastcall" {
				return true
			}
		}
		return false
	})
}

// countEvents counts the node's lastcall Events of a reason.
func countEvents(t *testing.T, nodeName, reason string) int32 {
	t.Helper()
	list, err := env.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, e := range list.Items {
		if e.InvolvedObject.Name == nodeName && e.Reason == reason && e.Source.Component == "lastcall" {
			n += max(e.Count, 1)
		}
	}
	return n
}

// A scheduled maintenance days away starts a drain that a budget blocks;
// then a spot notice leaving 25 s comes: the running drain is re-planned
// in place to the spot deadline, the blocked pod is deleted in time to
// shut down gracefully before it, and one drain covers both notices.
func TestEpisodeAgentSpotReplansMaintenanceDrain(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "replan", nil)
	stuckPods(t, ns, name)
	deletions := watchDeletions(t, name)

	maintenance := &aemm.ScheduledEvent{EventID: "instance-event-0e2e0000replan", Code: "system-reboot", State: "active",
		NotBefore: time.Now().Add(72 * time.Hour).Truncate(time.Second)}
	before := startAEMM(t, aemm.Config{MockDelay: 0, Subcommand: aemm.SubcommandEvents, Events: maintenance})
	proxy := newSwitchProxy(t, before.URL())
	a := startAgent(t, name, proxy.url, "--imds-signals=spot,scheduled-maintenance", "--deadline-margin=5s")

	waitEvents(t, "default", name, "DrainStarted")
	waitReason(t, ns, "EvictionBlocked")
	eventually(t, "the free pod gone and the drain blocked", func() bool {
		return a.metric(t, "lastcall_drains_in_progress", nil) == 1 && a.metric(t, "lastcall_evictions_total", map[string]string{"code": "429"}) >= 1
	})

	spotDeadline := aemm.TriggerAfter(25 * time.Second)
	after := startAEMM(t, aemm.Config{MockDelay: 0, SpotTime: spotDeadline, RebalanceDelay: aemm.Never,
		ASGTerminationDelay: aemm.Never, Events: maintenance})
	proxy.set(t, after.URL())

	waitEvents(t, "default", name, "DrainReplanned")
	at := stuckDeleted(t, deletions, name)
	if !at.Before(spotDeadline.Add(-5 * time.Second)) {
		t.Errorf("the stuck pod was deleted at %v, too late to shut down before the spot deadline %v less the margin", at, spotDeadline)
	}
	n := waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 2 && st.Holds[0].Drain == "success" && st.Holds[1].Drain == "success"
	})
	if !time.Now().Before(spotDeadline) {
		t.Errorf("the drain ended after the spot deadline")
	}
	st, _ := node.StateOf(n)
	for _, h := range st.Holds {
		if h.Owner != node.OwnerAgent {
			t.Errorf("hold %s owned by %q, want the agent", h.ID, h.Owner)
		}
	}
	a.checkMetrics(t, []metricWant{
		{"lastcall_drain_replans_total", nil, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
		{"lastcall_pdb_overrides_total", map[string]string{"outcome": "deleted"}, 1},
	})
	if got := countEvents(t, name, "DrainStarted"); got != 1 {
		t.Errorf("%d DrainStarted Events, want one drain for both notices", got)
	}
}

// The same in the queue processor: an AWS Health scheduled change days
// away, then a spot warning delivered late, whose two minutes end 25 s
// from now.
func TestEpisodeQueueSpotReplansMaintenanceDrain(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	m := e.group(t, 1, nil)[0]
	stuckPods(t, ns, m.node)
	deletions := watchDeletions(t, m.node)

	e.send(t, eventBridge("aws.health", "AWS Health Event", nil, map[string]any{
		"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_STOP_SCHEDULED", "statusCode": "upcoming",
		"startTime": time.Now().Add(72 * time.Hour).UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"), "affectedEntities": []map[string]string{{"entityValue": m.instance}},
	}))
	p := e.startProcessor(t, "replan")
	waitEvents(t, "default", m.node, "DrainStarted")
	waitReason(t, ns, "EvictionBlocked")

	spotDeadline := time.Now().Add(25 * time.Second)
	e.send(t, eventBridgeAt(spotDeadline.Add(-2*time.Minute), "aws.ec2", "EC2 Spot Instance Interruption Warning",
		[]string{instanceARN(m.instance)}, map[string]any{"instance-id": m.instance, "instance-action": "terminate"}))

	waitEvents(t, "default", m.node, "DrainReplanned")
	at := stuckDeleted(t, deletions, m.node)
	if !at.Before(spotDeadline.Add(-5 * time.Second)) {
		t.Errorf("the stuck pod was deleted at %v, too late to shut down before the spot deadline %v less the margin", at, spotDeadline)
	}
	eventually(t, "both messages processed and deleted", func() bool {
		return p.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}) == 2 && e.depth(t) == 0
	})
	p.checkMetrics(t, []metricWant{
		{"lastcall_drain_replans_total", nil, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
	})
	if got := countEvents(t, m.node, "DrainStarted"); got != 1 {
		t.Errorf("%d DrainStarted Events, want one drain for both notices", got)
	}
}

// An instance whose group has two terminate hooks gets two lifecycle
// actions at once: one drain, and each action completed with CONTINUE
// after it.
func TestEpisodeQueueTwoNoticesOneDrain(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	group := "asg-two-hooks-" + ns
	ids, err := moto.CreateGroup(ctx, e.cfg, moto.Group{Name: group, Size: 1,
		Hooks: []moto.Hook{{Name: "drain", HeartbeatTimeout: 300 * time.Second}, {Name: "backup", HeartbeatTimeout: 300 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	m := member{group: group, instance: ids[0], node: "ip-" + ids[0]}
	if _, err := env.AddNode(ctx, m.node, cluster.WithProviderID("aws:///"+moto.Region+"a/"+m.instance)); err != nil {
		t.Fatal(err)
	}
	stuckPods(t, ns, m.node)
	var hooks []member
	for _, hook := range []string{"drain", "backup"} {
		h := m
		h.token = e.proxy.Register(moto.LifecycleActionState{GroupName: group, HookName: hook, InstanceID: m.instance,
			Transition: "autoscaling:EC2_INSTANCE_TERMINATING"})
		hooks = append(hooks, h)
		e.send(t, lifecycleHook(h, hook))
	}
	p := e.startProcessor(t, "two-hooks")

	// The budget holds the drain until both notices are in it.
	waitNode(t, m.node, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 2
	})
	if err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Delete(context.Background(), "stuck", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both lifecycle actions completed and both messages deleted", func() bool {
		return e.depth(t) == 0 && !e.proxy.Active(m.instance)
	})
	completed := map[string]string{}
	for _, c := range e.proxy.Calls() {
		if c.Action == moto.ActionCompleteLifecycleAction && c.ErrorCode == "" {
			if _, twice := completed[c.HookName]; twice {
				t.Errorf("hook %s completed twice", c.HookName)
			}
			completed[c.HookName] = c.Result
		}
	}
	if completed["drain"] != "CONTINUE" || completed["backup"] != "CONTINUE" || len(completed) != 2 {
		t.Errorf("completions %v, want CONTINUE for both hooks", completed)
	}
	if got := countEvents(t, m.node, "DrainStarted"); got != 1 {
		t.Errorf("%d DrainStarted Events, want one drain for both notices", got)
	}
	p.checkMetrics(t, []metricWant{
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
		{"lastcall_lifecycle_completions_total", map[string]string{"result": "CONTINUE", "drain": "finished"}, 2},
	})
}

// GCE host maintenance that stops the VM drains the node; the maintenance
// is called off (NONE) and the node released; its pods come back; the same
// maintenance is announced again: the node is drained again.
func TestEpisodeAgentDrainedReleasedDrainedAgain(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "again", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 2, on, 0), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })
	g := startGCE(t)
	a := gceAgent(t, name)
	eventually(t, "the maintenance source up", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "gce-maintenance-event"}) == 1
	})

	for round := 1; round <= 2; round++ {
		g.Set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
		waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
		eventually(t, "the drain finished", func() bool {
			return a.metric(t, "lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}) == float64(round)
		})
		g.Set("instance/maintenance-event", "NONE")
		waitNode(t, name, func(n *corev1.Node) bool { return !n.Spec.Unschedulable && n.Annotations[node.AnnotationState] == "" })
		// The Deployment's replacements, pinned to the node, come back.
		waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })
	}
	if got := countEvents(t, name, "DrainStarted"); got != 2 {
		t.Errorf("%d DrainStarted Events, want 2", got)
	}
}

// The queue drains a node for a spot warning; an operator uncordons it and
// its pods come back; a terminate lifecycle hook for the same instance
// then drains it again before CONTINUE, rather than taking the earlier
// drain for done.
func TestEpisodeQueueDrainedUncordonedDrainedAgain(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	m := e.group(t, 1, nil)[0]
	on := map[string]string{"kubernetes.io/hostname": m.node}
	create(t, deployment(ns, "web", 2, on, 0), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, m.node)) == 2 })

	e.send(t, spotWarning(m.instance))
	p := e.startProcessor(t, "again")
	waitPods(t, ns, func(pods []*corev1.Pod) bool { return len(onNode(pods, m.node)) == 0 })
	eventually(t, "the spot warning processed", func() bool { return e.depth(t) == 0 })

	// The operator takes the node back (uncordon, untaint), and leaves
	// lastcall's state on it, which still says the node was drained.
	mutateNode(t, m.node, func(n *corev1.Node) {
		n.Spec.Unschedulable = false
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return strings.HasPrefix(t.Key, node.TaintPrefix) })
	})
	waitPods(t, ns, func(pods []*corev1.Pod) bool { return countReady(onNode(pods, m.node)) == 2 })

	e.send(t, terminateHook(m))
	waitPods(t, ns, func(pods []*corev1.Pod) bool { return len(onNode(pods, m.node)) == 0 })
	eventually(t, "the hook processed", func() bool { return e.depth(t) == 0 && !e.proxy.Active(m.instance) })
	wantCompletedOnce(t, e, m, "CONTINUE")
	p.checkMetrics(t, []metricWant{
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 2},
		{"lastcall_lifecycle_completions_total", map[string]string{"result": "CONTINUE", "drain": "finished"}, 1},
	})
}

// An agent starting on a node the queue processor holds and drains
// releases its own stale hold and leaves the processor's: the node stays
// cordoned and the queue's drain goes on.
func TestEpisodeQueueHoldSurvivesAgentStart(t *testing.T) {
	e := newAWSEnv(t)
	ns := newNamespace(t)
	m := e.group(t, 1, nil)[0]
	stuckPods(t, ns, m.node)
	e.send(t, terminateHook(m))
	p := e.startProcessor(t, "survives")
	waitReason(t, ns, "EvictionBlocked")

	// A hold the agent left before a restart, whose notice is gone.
	stale := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, "stale"), Kind: interruption.KindSpotInterruption,
		Action: interruption.ActionDrain}
	if _, err := node.NewClient(env.Client, nil, clock.RealClock{}, node.OwnerAgent, false, discardLog()).Hold(context.Background(), m.node, stale); err != nil {
		t.Fatal(err)
	}
	startAgent(t, m.node, startAEMM(t, quietAEMM()).URL())
	n := waitNode(t, m.node, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		_, staleLeft := st.Hold(stale.ID)
		return !staleLeft
	})
	st, _ := node.StateOf(n)
	if len(st.Holds) != 1 || st.Holds[0].Owner != node.OwnerQueue || !n.Spec.Unschedulable || !hasTaint(n, "lastcall.io/asg-termination") {
		t.Fatalf("after the agent started: holds %+v, unschedulable %v, taints %v; want the queue's hold, cordoned",
			st.Holds, n.Spec.Unschedulable, n.Spec.Taints)
	}
	if got := p.metric(t, "lastcall_drains_in_progress", nil); got != 1 {
		t.Errorf("the queue's drain stopped: %v in progress", got)
	}
}

// lifecycleHook is the EventBridge form of m's terminate lifecycle action
// of hook.
func lifecycleHook(m member, hook string) string {
	return eventBridge("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", nil,
		map[string]any{
			"LifecycleActionToken": m.token, "AutoScalingGroupName": m.group, "LifecycleHookName": hook,
			"EC2InstanceId": m.instance, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
		})
}
