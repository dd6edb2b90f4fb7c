package bench

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// The budget-gated drain: a Deployment of gatedReplicas under a
// PodDisruptionBudget of minAvailable gatedMinAvailable, whose pods are
// Ready cluster.SlowReadyDelay (2 s) after they are created, beside
// otherPods pods of another Deployment with no budget, all on the node
// drained. The budget lets one pod go at a time, each once the previous
// one's replacement, on a spare node, is Ready.
const (
	gatedReplicas     = 6
	gatedMinAvailable = 5
	otherPods         = 31
)

// BenchmarkBudgetGatedDrain drains the budget-gated workload with lastcall,
// then an identical one with aws-node-termination-handler, in the same run,
// and compares each drain with its floor.
//
// The floor is what the cluster itself took in that drain: the budget
// allows the k-th disruption only once the (k-1)-th evicted pod's
// replacement has been created, scheduled, made Ready and counted by the
// disruption controller. For each of the first gatedReplicas-1 evictions,
// the floor adds the time from that eviction to the next moment the
// budget's status allowed a disruption again; then the last pod's own
// deletion. A drainer that evicted each pod the moment the budget allowed
// would take that long; the rest of its time (from the hold to its first
// eviction, and from each allowance to its next eviction) is its own.
func BenchmarkBudgetGatedDrain(b *testing.B) {
	lastcallBinary(b)
	nthSetup(b)
	for range b.N {
		lc := budgetDrain(b, lastcallRun)
		nt := budgetDrain(b, nthRun)
		for _, r := range []struct {
			c contender
			r budgetResult
		}{{lastcallRun, lc}, {nthRun, nt}} {
			b.Logf("%s: held → last pod gone %s; floor %s; evictions of the budgeted pods after the hold %v; budget allowed a disruption again at %v",
				r.c.name, r.r.took, r.r.floor, r.r.evictions, r.r.allowed)
		}
		b.ReportMetric(lc.took.Seconds(), "lastcall-s")
		b.ReportMetric(lc.floor.Seconds(), "lastcall-floor-s")
		b.ReportMetric(nt.took.Seconds(), "nth-s")
		b.ReportMetric(nt.floor.Seconds(), "nth-floor-s")
		lcOver, ntOver := lc.took-lc.floor, nt.took-nt.floor
		results.compare(fmt.Sprintf("budget-gated drain: %d pods, %d of them under a PodDisruptionBudget minAvailable %d, replacements Ready %s after creation: held → last pod gone",
			gatedReplicas+otherPods, gatedReplicas, gatedMinAvailable, cluster.SlowReadyDelay),
			secs(lc.took), nthName+": "+secs(nt.took), times(nt.took.Seconds(), lc.took.Seconds()),
			"within 1 s of its floor "+check(lcOver <= time.Second))
		results.compare("  floor (the cluster's own part: replacements made Ready and counted, the last pod's deletion) / distance from it",
			secs(lc.floor)+" / +"+secs(lcOver), nthName+": "+secs(nt.floor)+" / +"+secs(ntOver), times(ntOver.Seconds(), lcOver.Seconds()), "")
		results.compare("  the budget last allowed a disruption the drain needed (held → that moment)",
			secs(lc.lastAllowed), nthName+": "+secs(nt.lastAllowed), "", "")
	}
}

type budgetResult struct {
	took        time.Duration   // held → last pod gone
	floor       time.Duration   // the cluster's own part of took
	lastAllowed time.Duration   // held → the budget allowed the last disruption needed
	evictions   []time.Duration // held → each budgeted pod's eviction
	allowed     []time.Duration // held → each time the budget allowed a disruption again
}

// budgetDrain sets up the budget-gated workload on a new node, runs the
// contender for it and times its drain of the spot notice.
func budgetDrain(b *testing.B, c contender) budgetResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	ns, err := env.CreateNamespace(ctx, "budget-")
	if err != nil {
		b.Fatal(err)
	}
	pool := map[string]string{"pool": ns}
	name := uniq("budget")
	addNode(b, name, pool)
	deployment(ctx, b, ns, "gated", gatedReplicas, pool, map[string]string{cluster.SlowReadyLabel: "true"})
	deployment(ctx, b, ns, "others", otherPods, pool, nil)
	minAvailable := intstr.FromInt32(gatedMinAvailable)
	_, err = env.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "gated"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "gated"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for app, n := range map[string]int{"gated": gatedReplicas, "others": otherPods} {
		if err := env.WaitPodsReady(ctx, ns, "app="+app, n); err != nil {
			b.Fatal(err)
		}
	}
	budget := waitBudget(ctx, b, ns, "gated", gatedReplicas, gatedReplicas-gatedMinAvailable)
	addNode(b, uniq("budget-spare"), pool)

	list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	originals := map[types.UID]string{} // the pods on the node, by app
	for _, p := range list.Items {
		if p.Spec.NodeName == name {
			originals[p.UID] = p.Labels["app"]
		}
	}
	if len(originals) != gatedReplicas+otherPods {
		b.Fatalf("%d pods on %s, want %d", len(originals), name, gatedReplicas+otherPods)
	}

	trigger := aemm.TriggerAfter(noticeLead)
	imds := startAEMM(b, spotNotice(trigger))
	defer imds.Stop()
	nodes, pods := watchNode(b, ctx, name), watchPods(b, ctx, ns)
	budgets := watchBudget(b, ctx, budget)
	p := c.start(b, name, imds.URL(), nil)
	defer p.Stop()
	if time.Now().After(trigger) {
		b.Fatalf("%s took until after the notice to start; widen noticeLead", c.name)
	}

	var heldAt time.Time
	evicted, gone := map[types.UID]time.Time{}, map[types.UID]time.Time{}
	var rises []time.Time // each time the budget allowed a disruption again
	allowed := budget.Status.DisruptionsAllowed
	onBudget := func(u stamped[*policyv1.PodDisruptionBudget]) {
		now := u.obj.Status.DisruptionsAllowed
		if allowed < 1 && now >= 1 {
			rises = append(rises, u.at)
		}
		allowed = now
	}
	for len(gone) < len(originals) {
		select {
		case <-ctx.Done():
			b.Fatalf("%s: drain of %s not done: %d of %d pods gone", c.name, name, len(gone), len(originals))
		case u, ok := <-nodes:
			if !ok {
				nodes = nil // waitHeld says so if the hold was missed
				continue
			}
			if heldAt.IsZero() && heldFor(u.obj, c.spotTaint) {
				heldAt = u.at
			}
		case u, ok := <-budgets:
			if !ok {
				b.Fatalf("%s: the budget's watch ended", c.name)
			}
			onBudget(u)
		case u, ok := <-pods:
			if !ok {
				b.Fatalf("pod watch ended: %d of %d pods gone", len(gone), len(originals))
			}
			uid := u.obj.UID
			if _, ok := originals[uid]; !ok {
				continue
			}
			if _, seen := evicted[uid]; !seen && (u.obj.DeletionTimestamp != nil || u.typ == watch.Deleted) {
				evicted[uid] = u.at
			}
			if u.typ == watch.Deleted {
				gone[uid] = u.at
			}
		}
	}
	heldAt = waitHeld(b, ctx, nodes, heldAt, name, c.spotTaint)

	// The budgeted pods' evictions, in order, and the last one's end.
	var evictions []time.Time
	var last types.UID
	for uid, app := range originals {
		if app != "gated" {
			continue
		}
		evictions = append(evictions, evicted[uid])
		if last == "" || evicted[uid].After(evicted[last]) {
			last = uid
		}
	}
	sort.Slice(evictions, func(i, j int) bool { return evictions[i].Before(evictions[j]) })
	// The budget falls to 0 with each eviction and rises again once the
	// replacement is Ready, so the k-th rise follows the k-th eviction. Its
	// watch may deliver the rises the drain needed after the pods' watch
	// delivered the pods gone.
	for len(rises) < gatedReplicas-1 {
		select {
		case <-ctx.Done():
			b.Fatalf("%s: the budget allowed a disruption again %d times, want %d", c.name, len(rises), gatedReplicas-1)
		case u, ok := <-budgets:
			if !ok {
				b.Fatalf("%s: the budget's watch ended", c.name)
			}
			onBudget(u)
		}
	}
	var floor time.Duration
	for k, e := range evictions[:len(evictions)-1] {
		if !rises[k].After(e) {
			b.Fatalf("%s: the budget allowed disruption %d at %s, before eviction %d at %s", c.name, k+2, rises[k], k+1, e)
		}
		floor += rises[k].Sub(e)
	}
	lastAllowed := rises[gatedReplicas-2]
	floor += gone[last].Sub(evicted[last])
	end := heldAt
	for _, g := range gone {
		if g.After(end) {
			end = g
		}
	}
	res := budgetResult{took: end.Sub(heldAt), floor: floor, lastAllowed: lastAllowed.Sub(heldAt)}
	for _, e := range evictions {
		res.evictions = append(res.evictions, e.Sub(heldAt).Round(time.Millisecond))
	}
	for _, r := range rises {
		res.allowed = append(res.allowed, r.Sub(heldAt).Round(time.Millisecond))
	}
	return res
}

// deployment creates a Deployment of n pods on the pool's nodes, its pods
// labelled app=name and with extra labels.
func deployment(ctx context.Context, b *testing.B, ns, name string, n int32, pool, extra map[string]string) {
	b.Helper()
	labels := map[string]string{"app": name}
	podLabels := map[string]string{"app": name}
	for k, v := range extra {
		podLabels[k] = v
	}
	_, err := env.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: corev1.PodSpec{
				NodeSelector: pool,
				Containers:   []corev1.Container{{Name: "c", Image: "registry.example/" + name + ":1"}},
			}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
}

// waitBudget waits until the disruption controller has computed the
// budget's status for its generation with these numbers, and returns it.
func waitBudget(ctx context.Context, b *testing.B, ns, name string, healthy, allowed int32) *policyv1.PodDisruptionBudget {
	b.Helper()
	var last *policyv1.PodDisruptionBudget
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pdb, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = pdb
		s := pdb.Status
		return s.ObservedGeneration == pdb.Generation && s.CurrentHealthy == healthy && s.ExpectedPods == healthy &&
			s.DisruptionsAllowed == allowed, nil
	})
	if err != nil {
		b.Fatalf("PodDisruptionBudget %s/%s: want %d healthy and %d disruptions allowed; last %+v: %v", ns, name, healthy, allowed, last, err)
	}
	return last
}

// watchBudget delivers the budget's updates after pdb, with the time each
// arrived.
func watchBudget(b *testing.B, ctx context.Context, pdb *policyv1.PodDisruptionBudget) <-chan stamped[*policyv1.PodDisruptionBudget] {
	b.Helper()
	w, err := env.Client.PolicyV1().PodDisruptionBudgets(pdb.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", pdb.Name).String(),
		ResourceVersion: pdb.ResourceVersion,
	})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan stamped[*policyv1.PodDisruptionBudget], 1024)
	go func() {
		defer close(out)
		defer w.Stop()
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*policyv1.PodDisruptionBudget); ok {
				out <- stamped[*policyv1.PodDisruptionBudget]{at: time.Now(), obj: p, typ: ev.Type}
			}
		}
	}()
	return out
}
