package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

const drainPods = 100

// BenchmarkDrain100Pods drains a node with 100 pods (grace 0, no PDB) with
// lastcall's default settings, then a second, identical node with
// `kubectl drain`, on the same cluster in the same run. Replacements land on
// a spare node, as they would in a real cluster.
func BenchmarkDrain100Pods(b *testing.B) {
	lastcallBinary(b) // built before any clock starts
	for range b.N {
		lc := drainWithLastcall(b)
		kd := drainWithKubectl(b)
		b.ReportMetric(lc.drain.Seconds(), "lastcall-drain-s")
		b.ReportMetric(kd.Seconds(), "kubectl-drain-s")
		b.ReportMetric(lc.doneLag.Seconds(), "done-after-last-pod-s")
		results.add("100 pods drained: cordon → last pod gone", secs(lc.drain),
			fmt.Sprintf("19.4 s (aws-node-termination-handler, QPS 5); kubectl drain here, same run: %s (%.0f×)", secs(kd), kd.Seconds()/lc.drain.Seconds()), "≤ 1 s")
		results.add("done reported after the last pod was gone", secs(lc.doneLag), "", "≤ 0.1 s")
		results.add("cordon → done reported", secs(lc.cordonToDone), "39.4 s (aws-node-termination-handler)", "")
		results.add("notice → done reported (100 pods)", secs(lc.noticeToDone), "", "")
		results.add("agent peak RSS during the 100-pod drain", mib(lc.peakRSS), "", "")
	}
}

type drainResult struct {
	drain, doneLag, cordonToDone, noticeToDone time.Duration
	peakRSS                                    int64
}

// workload puts drainPods pods of one Deployment on a new node, adds a spare
// node for their replacements, and returns the namespace and the node.
func workload(b *testing.B, prefix string) (string, string) {
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
	replicas, grace := int32(drainPods), int64(0)
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
	if err := env.WaitPodsReady(ctx, ns, "app=load", drainPods); err != nil {
		b.Fatal(err)
	}
	addNode(b, uniq(prefix+"-spare"), pool)
	return ns, name
}

func drainWithLastcall(b *testing.B) drainResult {
	b.Helper()
	ns, name := workload(b, "drain-lc")
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
	for doneAt.IsZero() || gone < drainPods {
		select {
		case <-ctx.Done():
			b.Fatalf("drain of %s not done: %d of %d pods gone", name, gone, drainPods)
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
		case u := <-pods:
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

func drainWithKubectl(b *testing.B) time.Duration {
	b.Helper()
	_, name := workload(b, "drain-kd")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := env.KubectlCommand(ctx, "drain", name, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=100s")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("kubectl drain: %v\n%s", err, out)
	}
	return took
}
