package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

const waitTimeout = 2 * time.Minute

var seq int

func uniq(prefix string) string {
	seq++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().Unix()%100000, seq)
}

func addNode(b *testing.B, name string, labels map[string]string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := env.AddNode(ctx, name, cluster.WithLabels(labels)); err != nil {
		b.Fatal(err)
	}
}

func startAEMM(b *testing.B, cfg aemm.Config) *aemm.Server {
	b.Helper()
	s, err := aemm.Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// noticeLead is how long after AEMM's start the spot notice appears: time
// enough for lastcall and aws-node-termination-handler to start, so that
// each meets the notice already polling.
const noticeLead = 4 * time.Second

// spotNotice is AEMM in its spot mode, as aws-node-termination-handler's
// users run it, whose only notice, a spot interruption, appears exactly at
// trigger (AEMM serves it from that whole second) for the node to go two
// minutes later. Spot mode would also serve a rebalance recommendation from
// the start: it is kept away, so that the node starts in service for both
// agents (lastcall cordons on a rebalance recommendation;
// aws-node-termination-handler, by default, does not).
func spotNotice(trigger time.Time) aemm.Config {
	return aemm.Config{Subcommand: aemm.SubcommandSpot, MockTriggerTime: trigger, SpotTime: trigger.Add(2 * time.Minute),
		RebalanceDelay: aemm.Never}
}

// noNotice is AEMM in its spot mode with no notice in the benchmark's life.
func noNotice() aemm.Config {
	never := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	return spotNotice(never)
}

// heldFor reports whether the node is cordoned and carries the taint: held
// for that notice.
func heldFor(n *corev1.Node, taint string) bool {
	if !n.Spec.Unschedulable {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == taint {
			return true
		}
	}
	return false
}

// waitHeld returns held if set, or else waits for the node update that
// shows the node held: a watch on nodes delivers it independently of the
// watch on pods, so it may come after the last pod is gone.
func waitHeld(b *testing.B, ctx context.Context, nodes <-chan stamped[*corev1.Node], held time.Time, name, taint string) time.Time {
	b.Helper()
	for held.IsZero() {
		if nodes == nil {
			b.Fatalf("node watch of %s ended before it was seen held", name)
		}
		select {
		case <-ctx.Done():
			b.Fatalf("node %s drained but never seen cordoned with taint %s", name, taint)
		case u, ok := <-nodes:
			if !ok {
				b.Fatalf("node watch of %s ended before it was seen held", name)
			}
			if heldFor(u.obj, taint) {
				held = u.at
			}
		}
	}
	return held
}

// startAgentEnv starts the agent with extra environment variables.
func startAgentEnv(b *testing.B, node, imdsURL string, extra ...string) *agentproc.Agent {
	b.Helper()
	a, err := agentproc.Start(context.Background(), agentproc.Config{
		Binary: lastcallBinary(b), Node: node, Kubeconfig: env.Kubeconfig, IMDS: imdsURL,
		LogPath: filepath.Join(env.Dir, "logs", "lastcall-"+node+".log"), Env: extra,
	})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// watchNode delivers the node's updates with the time each arrived.
func watchNode(b *testing.B, ctx context.Context, name string) <-chan stamped[*corev1.Node] {
	b.Helper()
	w, err := env.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan stamped[*corev1.Node], 1024)
	go func() {
		defer close(out)
		defer w.Stop()
		for ev := range w.ResultChan() {
			if n, ok := ev.Object.(*corev1.Node); ok {
				out <- stamped[*corev1.Node]{at: time.Now(), obj: n, typ: ev.Type}
			}
		}
	}()
	return out
}

// watchPods delivers the namespace's pod events with the time each arrived.
// A watch the API server ends (under load it may) is resumed from the last
// resourceVersion seen, so no event is lost.
func watchPods(b *testing.B, ctx context.Context, ns string) <-chan stamped[*corev1.Pod] {
	b.Helper()
	list, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	rv := list.ResourceVersion
	out := make(chan stamped[*corev1.Pod], 16384)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			w, err := env.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				return
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue // an error status: resume below
				}
				rv = p.ResourceVersion
				if ev.Type != watch.Bookmark {
					out <- stamped[*corev1.Pod]{at: time.Now(), obj: p, typ: ev.Type}
				}
			}
			w.Stop()
		}
	}()
	return out
}

type stamped[T any] struct {
	at  time.Time
	obj T
	typ watch.EventType
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// Nearest rank.
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// times says how many times a is b, as the table's ratio column does.
func times(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	r := a / b
	switch {
	case r >= 10:
		return fmt.Sprintf("%.0f×", r)
	case r >= 1:
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// check marks a target met or not.
func check(ok bool) string {
	if ok {
		return "✔"
	}
	return "✘"
}

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }
