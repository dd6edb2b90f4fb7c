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

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// BenchmarkDrain drains a node of 10, 100 and 500 pods (grace 0, no PDB)
// with lastcall's default settings, then an identical node with
// `kubectl drain`, on the same cluster in the same run. Replacements land on
// a spare node, as they would in a real cluster. Beside them, the pods' own
// shutdown: the same pods deleted all at once by a bare client, from the
// first delete to the last pod gone (kwok, the kubelet here, finishing
// them); lastcall's overhead is its drain less that.
func BenchmarkDrain(b *testing.B) {
	lastcallBinary(b) // built before any clock starts
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			for range b.N {
				lc := drainWithLastcall(b, n)
				kd := drainWithKubectl(b, n)
				own := deleteAll(b, n)
				b.ReportMetric(lc.drain.Seconds(), "lastcall-drain-s")
				b.ReportMetric(kd.Seconds(), "kubectl-drain-s")
				b.ReportMetric(own.Seconds(), "pods-own-shutdown-s")
				b.ReportMetric(lc.doneLag.Seconds(), "done-after-last-pod-s")
				anchor := fmt.Sprintf("kubectl drain, same run: %s (%s)", secs(kd), ratio(kd, lc.drain))
				target := ""
				if n == 100 {
					anchor = "aws-node-termination-handler (QPS 5): 19.4 s (" + ratio(19400*time.Millisecond, lc.drain) + "); " + anchor
					target = "≤ 1 s"
				}
				results.add(fmt.Sprintf("%d pods drained: cordon → last pod gone", n), secs(lc.drain), anchor, target)
				overheadTarget := ""
				if n == 100 {
					overheadTarget = "< 0.5 s"
				}
				results.add(fmt.Sprintf("  %d pods: the pods' own shutdown (deleted at once) / lastcall's overhead beyond it", n),
					secs(own)+" / "+secs(lc.drain-own), "", overheadTarget)
				if n == 100 {
					results.add("done reported after the last pod was gone", secs(lc.doneLag), "", "≤ 0.1 s")
					results.add("cordon → done reported", secs(lc.cordonToDone), "aws-node-termination-handler: 39.4 s ("+ratio(39400*time.Millisecond, lc.cordonToDone)+")", "")
					results.add("notice → done reported (100 pods)", secs(lc.noticeToDone), "", "")
				}
				results.add(fmt.Sprintf("agent peak RSS during the %d-pod drain", n), mib(lc.peakRSS), "", "")
			}
		})
	}
}

// ratio says how many times faster lastcall was than the anchor.
func ratio(anchor, lastcall time.Duration) string {
	return fmt.Sprintf("%.0f× faster", anchor.Seconds()/lastcall.Seconds())
}

type drainResult struct {
	drain, doneLag, cordonToDone, noticeToDone time.Duration
	peakRSS                                    int64
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

func drainWithLastcall(b *testing.B, n int) drainResult {
	b.Helper()
	ns, name := workload(b, "drain-lc", n)
	trigger := aemm.TriggerAfter(1500 * time.Millisecond)
	imds := startAEMM(b, spotAt(trigger, trigger.Add(2*time.Minute)))
	defer imds.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nodes, pods := watchNode(b, ctx, name), watchPods(b, ctx, ns)
	a := startAgent(b, name, imds.URL())
	defer a.Stop()
	if time.Now().After(trigger) {
		b.Fatalf("the agent took until after the notice to start; widen the trigger margin")
	}

	var cordonAt, lastGone, doneAt time.Time
	gone := 0
	for doneAt.IsZero() || gone < n {
		select {
		case <-ctx.Done():
			b.Fatalf("drain of %s not done: %d of %d pods gone", name, gone, n)
		case u := <-nodes:
			if cordonAt.IsZero() && u.obj.Spec.Unschedulable {
				cordonAt = u.at
			}
			if st, _ := node.StateOf(u.obj); len(st.Holds) > 0 && st.Holds[0].Drain != "" && doneAt.IsZero() {
				if st.Holds[0].Drain != "success" {
					b.Fatalf("drain result %q", st.Holds[0].Drain)
				}
				doneAt = u.at
			}
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
	_, peak, err := a.Memory()
	if err != nil {
		b.Fatal(err)
	}
	return drainResult{
		drain: lastGone.Sub(cordonAt), doneLag: doneAt.Sub(lastGone),
		cordonToDone: doneAt.Sub(cordonAt), noticeToDone: doneAt.Sub(trigger), peakRSS: peak,
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
