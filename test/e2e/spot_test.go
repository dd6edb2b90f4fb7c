package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// A spot notice taints, cordons and labels the node, evicts every evictable
// pod (non-critical before critical, with grace clamped to the deadline),
// leaves DaemonSet pods alone, and says so in Events and metrics.
func TestSpotNoticeDrainsNode(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "spot", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 5, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	create(t, deployment(ns, "slow", 1, on, 300), env.Client.AppsV1().Deployments(ns).Create)
	create(t, daemonSet(ns, "logs", on), env.Client.AppsV1().DaemonSets(ns).Create)
	critical := deployment("kube-system", "crit-"+name, 1, on, 30)
	critical.Spec.Template.Spec.PriorityClassName = "system-cluster-critical"
	create(t, critical, env.Client.AppsV1().Deployments("kube-system").Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 7 })
	waitPods(t, "kube-system", func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 1 })

	// Record the order pods go in, and the grace they were given.
	order := watchDeletions(t, name)

	trigger := aemm.TriggerAfter(time.Second)
	spotTime := trigger.Add(30 * time.Second) // a 30 s deadline: the 300 s grace must shrink
	imds := startAEMM(t, aemm.Config{
		InstanceID: "i-0123456789abcdef0", MockTriggerTime: trigger, SpotTime: spotTime,
		RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never,
		Events: &aemm.ScheduledEvent{State: "completed"},
	})
	a := startAgent(t, name, imds.URL(), "--deadline-margin=5s")

	n := waitNode(t, name, func(n *corev1.Node) bool {
		return n.Spec.Unschedulable && hasTaint(n, "lastcall.io/spot-interruption") && n.Labels[node.LabelExcludeLB] == "true"
	})
	if time.Now().Before(trigger) {
		t.Fatalf("node cordoned before the notice existed")
	}
	st, err := node.StateOf(n)
	if err != nil || len(st.Holds) != 1 || !st.Cordoned || !st.LBExcluded {
		t.Fatalf("lastcall state on node: %+v, %v", st, err)
	}

	waitPods(t, ns, func(p []*corev1.Pod) bool {
		left := onNode(p, name)
		return len(left) == 1 && left[0].Labels["app"] == "logs" && ready(left[0])
	})
	waitPods(t, "kube-system", func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})

	// Order: the critical pod went after every non-critical one.
	deletions := order()
	if len(deletions) != 7 {
		t.Fatalf("saw %d deletions, want 7: %v", len(deletions), deletions)
	}
	if last := deletions[len(deletions)-1]; last.critical == false {
		t.Errorf("the critical pod was not evicted last: %v", deletions)
	}
	// No critical pod was evicted while a non-critical one still ran: in
	// the watch's order, every non-critical pod was removed before any
	// critical pod's eviction.
	for _, c := range deletions {
		for _, n := range deletions {
			if c.critical && !n.critical && (n.goneSeq == 0 || n.goneSeq > c.seq) {
				t.Errorf("critical pod %s evicted (watch event %d) before %s was gone (event %d)", c.name, c.seq, n.name, n.goneSeq)
			}
		}
	}
	for _, d := range deletions {
		if d.name[:4] == "slow" {
			// 25 s to the deadline less the margin, of which the critical
			// pod (grace 30 s) is kept half: 10-13 s are left.
			if d.grace == nil || *d.grace > 13 || *d.grace < 10 {
				t.Errorf("pod with grace 300 under a 30 s deadline, before a critical pod, got grace %v, want 10-13", d.grace)
			} else if end := d.at.Add(time.Duration(*d.grace) * time.Second); !end.Before(spotTime.Add(-5 * time.Second)) {
				t.Errorf("grace %ds from %s ends at %s, not before the deadline less the margin %s", *d.grace, d.at, end, spotTime)
			}
		}
	}

	waitEvents(t, "default", name, "InterruptionNotice", "Cordoned", "DrainStarted", "DrainCompleted")
	waitEvents(t, ns, deletions[0].name, "Evicted")

	a.checkMetrics(t, []metricWant{
		{"lastcall_events_received_total", map[string]string{"source": "imds-spot", "kind": "spot-interruption", "action": "drain"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "cordon", "result": "success"}, 1},
		{"lastcall_actions_total", map[string]string{"action": "drain", "result": "success"}, 1},
		{"lastcall_drain_duration_seconds", map[string]string{"kind": "spot-interruption", "result": "success"}, 1},
		{"lastcall_evictions_total", map[string]string{"code": "201"}, 7},
		{"lastcall_pods_skipped_total", map[string]string{"rule": "daemonset"}, 1},
		{"lastcall_source_up", map[string]string{"source": "imds-spot"}, 1},
		{"lastcall_notice_to_cordon_seconds", nil, 1},
	})
	if code := a.probe(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code := a.probe(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
}

func countReady(pods []*corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if ready(p) {
			n++
		}
	}
	return n
}

type deletion struct {
	name     string
	critical bool
	grace    *int64
	at       time.Time // when the deletion was requested
	// seq and goneSeq are the positions in the node's pod watch (ordered
	// by resourceVersion) of the deletion's request and of the pod's
	// removal; goneSeq is 0 until it is removed.
	seq, goneSeq int
}

// watchDeletions records, in order, each pod of node that gets a deletion
// timestamp. The returned func stops the watch and returns the record.
func watchDeletions(t *testing.T, nodeName string) func() []deletion {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := env.Client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", nodeName).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out []deletion
	seen := map[string]int{} // name → index in out
	done := make(chan struct{})
	go func() {
		defer close(done)
		seq := 0
		for ev := range w.ResultChan() {
			seq++
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || (ev.Type != watch.Modified && ev.Type != watch.Deleted) || p.DeletionTimestamp == nil {
				continue
			}
			mu.Lock()
			i, known := seen[p.Name]
			if !known {
				i = len(out)
				seen[p.Name] = i
				out = append(out, deletion{name: p.Name, critical: p.Spec.PriorityClassName != "", grace: p.DeletionGracePeriodSeconds,
					at: p.DeletionTimestamp.Add(-time.Duration(ptrOr(p.DeletionGracePeriodSeconds)) * time.Second), seq: seq})
			}
			if ev.Type == watch.Deleted {
				out[i].goneSeq = seq
			}
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() { cancel(); w.Stop(); <-done })
	}
	t.Cleanup(stop)
	return func() []deletion {
		stop()
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

func ptrOr(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
