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

// spotAt is a metadata service whose only notice, a spot interruption,
// appears exactly at trigger (AEMM serves it from that whole second).
func spotAt(trigger, deadline time.Time) aemm.Config {
	return aemm.Config{MockTriggerTime: trigger, SpotTime: deadline, RebalanceDelay: aemm.Never,
		ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"}}
}

func startAgent(b *testing.B, node, imdsURL string) *agentproc.Agent {
	b.Helper()
	return startAgentEnv(b, node, imdsURL)
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

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }
