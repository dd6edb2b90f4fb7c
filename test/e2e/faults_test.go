package e2e

import (
	"io"
	"log/slog"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/emulators/aemm"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// An unreachable metadata service is counted, makes the agent unready once
// stale, and never stops the agent nor fails its liveness.
func TestUnreachableMetadataIsSurvived(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	name := newNode(t, "unreach", nil)
	a := startAgent(t, name, closed, "--source-stale-after=1s")
	eventually(t, "unreachable errors counted", func() bool {
		return a.metric(t, "lastcall_source_errors_total", map[string]string{"source": "imds-spot", "reason": "unreachable"}) >= 2
	})
	eventually(t, "/readyz to fail", func() bool { return a.probe(t, "/readyz") == 503 })
	if got := a.metric(t, "lastcall_source_up", map[string]string{"source": "imds-spot"}); got != 0 {
		t.Errorf("source_up = %v with the service unreachable", got)
	}
	if code := a.probe(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d: liveness is the agent's own loop, not the metadata service", code)
	}
}

// Malformed answers are counted and survived, and the agent acts as soon as
// the service answers properly again.
func TestMalformedMetadataIsSurvived(t *testing.T) {
	name := newNode(t, "malformed", nil)
	trigger := aemm.TriggerAfter(0)
	imds := startAEMM(t, aemm.Config{MockTriggerTime: trigger, Subcommand: aemm.SubcommandSpot, RebalanceDelay: aemm.Never})
	proxy := newSwitchProxy(t, imds.URL())
	garbage := `{"action": 42, "time": [`
	proxy.corrupt.Store(&garbage)
	a := startAgent(t, name, proxy.url, "--imds-signals=spot,rebalance")
	eventually(t, "malformed answers counted", func() bool {
		return a.metric(t, "lastcall_source_errors_total", map[string]string{"source": "imds-spot", "reason": "malformed"}) >= 2 &&
			a.metric(t, "lastcall_source_errors_total", map[string]string{"source": "imds-rebalance", "reason": "malformed"}) >= 2
	})
	if n := waitNode(t, name, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable {
		t.Fatal("a malformed notice cordoned the node")
	}
	proxy.corrupt.Store(nil)
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	eventually(t, "source up again", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "imds-spot"}) == 1
	})
}

// Dry run reports what it would do and changes nothing.
func TestDryRunChangesNothing(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "dryrun", nil)
	create(t, deployment(ns, "web", 2, map[string]string{"kubernetes.io/hostname": name}, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == 2 })
	imds := startAEMM(t, aemm.Config{MockTriggerTime: aemm.TriggerAfter(0), Subcommand: aemm.SubcommandSpot, RebalanceDelay: aemm.Never})
	a := startAgent(t, name, imds.URL(), "--dry-run", "--imds-signals=spot")
	eventually(t, "the dry-run drain", func() bool {
		return a.metric(t, "lastcall_actions_total", map[string]string{"action": "drain", "result": "dry_run"}) == 1
	})
	n := waitNode(t, name, func(*corev1.Node) bool { return true })
	if n.Spec.Unschedulable || len(n.Annotations["lastcall.io/state"]) > 0 || hasTaint(n, "lastcall.io/spot-interruption") {
		t.Fatalf("dry run changed the node: %+v", n.Spec)
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(p) == 2 })
	if got := a.metric(t, "lastcall_evictions_total", nil); got != 0 {
		t.Fatalf("dry run evicted %v pods", got)
	}
}
