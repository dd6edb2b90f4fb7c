package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/test/anchors/nth"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// BenchmarkDrain drains a node of 10, 100 and 500 pods (grace 0, no PDB)
// with lastcall's default settings, then an identical node with
// `kubectl drain`, on the same cluster in the same run; at 100 pods,
// aws-node-termination-handler drains a third identical node, against the
// same AEMM configuration and notice lead. Replacements land on a spare
// node, as they would in a real cluster. A drain runs from the node being
// held for the spot notice (cordoned, with the agent's spot taint) to the
// last pod gone. Beside them, the pods' own shutdown: the same pods deleted
// all at once by a bare client, from the first delete to the last pod gone
// (kwok, the kubelet here, finishing them); lastcall's overhead is its
// drain less that.
func BenchmarkDrain(b *testing.B) {
	lastcallBinary(b) // built before any clock starts
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			withNTH := n == 100
			if withNTH {
				nthSetup(b)
			}
			for range b.N {
				lc := drainWith(b, lastcallRun, n)
				var nt drainResult
				if withNTH {
					nt = drainWith(b, nthRun, n)
				}
				kd := drainWithKubectl(b, n)
				own := deleteAll(b, n)
				b.ReportMetric(lc.drain.Seconds(), "lastcall-drain-s")
				b.ReportMetric(kd.Seconds(), "kubectl-drain-s")
				b.ReportMetric(own.Seconds(), "pods-own-shutdown-s")
				b.ReportMetric(lc.doneLag.Seconds(), "done-after-last-pod-s")
				what := fmt.Sprintf("%d pods drained: held → last pod gone", n)
				if withNTH {
					b.ReportMetric(nt.drain.Seconds(), "nth-drain-s")
					r := nt.drain.Seconds() / lc.drain.Seconds()
					results.compare(what, secs(lc.drain), nthName+": "+secs(nt.drain), times(nt.drain.Seconds(), lc.drain.Seconds()),
						"≤ 1/20 of "+nthName+"'s "+check(r >= 20))
					what = "  the same, `kubectl drain` of an identical node"
				}
				results.compare(what, secs(lc.drain), "kubectl drain: "+secs(kd), times(kd.Seconds(), lc.drain.Seconds()), "")
				results.add(fmt.Sprintf("  %d pods: the pods' own shutdown (deleted at once) / lastcall's overhead beyond it", n),
					secs(own)+" / "+secs(lc.drain-own), "", "")
				if withNTH {
					results.compare("  100 pods: done reported after the last pod was gone, in the log (lastcall: \"drain finished\"; "+nthName+": \""+nth.DoneLine+"\")",
						secs(lc.doneLag), nthName+": "+secs(nt.doneLag), times(nt.doneLag.Seconds(), lc.doneLag.Seconds()), "")
					results.add("  100 pods: lastcall's DrainCompleted Event seen by a watch, after the last pod was gone", secs(lc.eventLag), "", "")
					results.compare("  100 pods: held → done reported", secs(lc.heldToDone), nthName+": "+secs(nt.heldToDone),
						times(nt.heldToDone.Seconds(), lc.heldToDone.Seconds()), "")
					results.compare("  100 pods: notice → done reported", secs(lc.noticeToDone), nthName+": "+secs(nt.noticeToDone),
						times(nt.noticeToDone.Seconds(), lc.noticeToDone.Seconds()), "")
					results.compare("  100 pods: peak cgroup usage, start-up and drain (memory.max_usage_in_bytes, page cache included)",
						mib(lc.peak), nthName+": "+mib(nt.peak), times(float64(nt.peak), float64(lc.peak)), "")
				} else {
					results.add(fmt.Sprintf("  %d pods: peak cgroup usage, start-up and drain (page cache included)", n), mib(lc.peak), "", "")
				}
			}
		})
	}
}

type drainResult struct {
	drain        time.Duration // held → last pod gone
	doneLag      time.Duration // last pod gone → done in the log
	eventLag     time.Duration // last pod gone → DrainCompleted Event seen (lastcall)
	heldToDone   time.Duration
	noticeToDone time.Duration
	peak         int64 // largest cgroup usage
}

// workload puts n pods of one Deployment on a new node, adds a spare node
// for their replacements, and returns the namespace and the node.
func workload(b *testing.B, prefix string, n int) (string, string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ns, err := env.CreateNamespace(ctx, prefix+"-")
	if err != nil {
		b.Fatal(err)
	}
	pool := map[string]string{"pool": ns}
	name := uniq(prefix)
	addNode(b, name, pool)
	roomFor(b, name, n)
	replicas, grace := int32(n), int64(0)
	labels := map[string]string{"app": "load"}
	_, err = env.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "load"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: pool, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "c", Image: "registry.example/load:1"}},
			}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := env.WaitPodsReady(ctx, ns, "app=load", n); err != nil {
		b.Fatal(err)
	}
	spare := uniq(prefix + "-spare")
	addNode(b, spare, pool)
	roomFor(b, spare, n)
	return ns, name
}

// roomFor raises a node's pod capacity (kwok's default is 110) to fit n.
func roomFor(b *testing.B, name string, n int) {
	b.Helper()
	if n <= 100 {
		return
	}
	pods := fmt.Sprintf(`{"status":{"capacity":{"pods":"%d"},"allocatable":{"pods":"%d"}}}`, n+10, n+10)
	_, err := env.Client.CoreV1().Nodes().Patch(context.Background(), name, types.MergePatchType, []byte(pods), metav1.PatchOptions{}, "status")
	if err != nil {
		b.Fatal(err)
	}
}

// deleteAll measures the pods' own shutdown: n pods deleted at once (grace
// 0) by a bare client, from the first delete to the last pod gone.
func deleteAll(b *testing.B, n int) time.Duration {
	b.Helper()
	ns, _ := workload(b, "drain-own", n)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=load"})
	if err != nil {
		b.Fatal(err)
	}
	// Scale the Deployment to 0 first, so no replacement is counted.
	scale := []byte(`{"spec":{"replicas":0}}`)
	if _, err := env.Client.AppsV1().Deployments(ns).Patch(ctx, "load", types.MergePatchType, scale, metav1.PatchOptions{}); err != nil {
		b.Fatal(err)
	}
	pods := watchPods(b, ctx, ns)
	start := time.Now()
	zero := int64(0)
	var wg sync.WaitGroup
	for _, p := range list.Items {
		wg.Go(func() {
			_ = env.Client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		})
	}
	var last time.Time
	for gone := 0; gone < len(list.Items); {
		select {
		case <-ctx.Done():
			b.Fatalf("%d of %d pods gone", gone, len(list.Items))
		case u, ok := <-pods:
			if !ok {
				b.Fatalf("pod watch ended: %d of %d pods gone", gone, len(list.Items))
			}
			if u.typ == watch.Deleted {
				gone++
				last = u.at
			}
		}
	}
	wg.Wait()
	return last.Sub(start)
}

// drainWith puts n pods on a node, runs the contender for it in a memory
// cgroup of its own, and times its drain of the spot notice.
func drainWith(b *testing.B, c contender, n int) drainResult {
	b.Helper()
	short := map[string]string{lastcallRun.name: "lc", nthRun.name: "nth"}[c.name]
	ns, name := workload(b, "drain-"+short, n)
	trigger := aemm.TriggerAfter(noticeLead)
	imds := startAEMM(b, spotNotice(trigger))
	defer imds.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nodes, pods := watchNode(b, ctx, name), watchPods(b, ctx, ns)
	cg := memcgFor(b, name)
	p := c.start(b, name, imds.URL(), cg)
	defer p.Stop()
	done := c.done(b, ctx, p, name)
	var event <-chan time.Time // lastcall's DrainCompleted Event
	if c.name == lastcallRun.name {
		event = drainCompletedEvent(b, ctx, name)
	}
	if time.Now().After(trigger) {
		b.Fatalf("%s took until after the notice to start; widen noticeLead", c.name)
	}

	var heldAt, lastGone, doneAt, eventAt time.Time
	gone := 0
	for doneAt.IsZero() || gone < n || (event != nil && eventAt.IsZero()) {
		select {
		case <-ctx.Done():
			b.Fatalf("%s: drain of %s not done: %d of %d pods gone, done reported: %v, DrainCompleted seen: %v",
				c.name, name, gone, n, !doneAt.IsZero(), !eventAt.IsZero())
		case u, ok := <-nodes:
			if !ok {
				nodes = nil // waitHeld says so if the hold was missed
				continue
			}
			if heldAt.IsZero() && heldFor(u.obj, c.spotTaint) {
				heldAt = u.at
			}
		case at := <-done:
			doneAt = at
		case at := <-event:
			eventAt = at
		case u, ok := <-pods:
			if !ok {
				b.Fatalf("pod watch ended: %d of %d pods gone", gone, n)
			}
			if u.typ == watch.Deleted && u.obj.Spec.NodeName == name {
				gone++
				lastGone = u.at
			}
		}
	}
	heldAt = waitHeld(b, ctx, nodes, heldAt, name, c.spotTaint)
	peak, err := cg.peak()
	if err != nil {
		b.Fatal(err)
	}
	return drainResult{
		drain: lastGone.Sub(heldAt), doneLag: doneAt.Sub(lastGone), eventLag: eventAt.Sub(lastGone),
		heldToDone: doneAt.Sub(heldAt), noticeToDone: doneAt.Sub(trigger), peak: peak,
	}
}

func drainWithKubectl(b *testing.B, n int) time.Duration {
	b.Helper()
	_, name := workload(b, "drain-kd", n)
	// kubectl's client allows 5 requests a second: give it room.
	limit := time.Duration(n/4+60) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit+30*time.Second)
	defer cancel()
	cmd := env.KubectlCommand(ctx, "drain", name, "--ignore-daemonsets", "--delete-emptydir-data", fmt.Sprintf("--timeout=%s", limit))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("kubectl drain: %v\n%s", err, out)
	}
	return took
}
