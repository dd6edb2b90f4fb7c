package e2e

import (
	"context"
	"net/url"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// runAppVia is runApp with every call to the API server going through
// addr; an error lastcall returns, cut off, is logged.
func runAppVia(t *testing.T, o *app.Options, addr, key, name string) *agent {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + addr
	return runAppWith(t, o, cfg, false, key, name)
}

// A replica draining a node is cut off from the API server: its calls go
// unanswered, its connections never close. It gives the node's Lease up
// (lastcall_lease_losses_total{reason="deadline"}) before the other
// replica takes the Lease over, which then finishes the drain and the
// lifecycle action.
func TestQueueReplicaCutOffStopsBeforeAnotherTakesOver(t *testing.T) {
	e := newAWSEnv(t)
	m, ns := e.guardedHook(t)
	const duration = "--lease-duration=6s" // renew deadline 4 s
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	cable := forward(t, "127.0.0.1", u.Host)
	base := []string{"--mode=queue", "--queue-url=" + e.queueURL, "--region=" + moto.Region, "--aws-endpoint=" + e.proxy.URL(),
		"--heartbeat-interval=1s", "--retry-after=1s", "--visibility-timeout=6s", duration,
		"--pod-name=replica-a", "--pod-namespace=default", "--log-format=text"}
	a := runAppVia(t, options(t, base...), cable.addr, "replica", "replica-a")
	t.Cleanup(cable.close) // before a stops: nothing of a's waits on the cut cable then
	eventually(t, "replica a to be ready", func() bool { return a.probe(t, "/readyz") == 200 })

	name := lease.Name(m.node)
	holder := func(le *coordinationv1.Lease) string {
		if le.Spec.HolderIdentity == nil {
			return ""
		}
		return *le.Spec.HolderIdentity
	}
	waitNode(t, m.node, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	eventually(t, "replica a's heartbeats", func() bool { return e.proxy.Heartbeats(m.instance) >= 1 })

	cable.sever()
	cutAt := time.Now()
	b := e.startProcessor(t, "replica-b", duration)

	// The moment the Lease's holder becomes b, a must already have given it up.
	// b takes over once it has received the message twice, a Lease duration
	// apart, while a (cut off from the API server, not from SQS) receives
	// it too and holds it up to its renew deadline each time: allow for
	// several such rounds.
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	defer cancel()
	var lossesAtTakeover float64
	lw := cache.NewListWatchFromClient(env.Client.CoordinationV1().RESTClient(), "leases", "default", fields.OneTermEqualSelector("metadata.name", name))
	_, err = watchtools.UntilWithSync(ctx, lw, &coordinationv1.Lease{}, nil, func(ev watch.Event) (bool, error) {
		le, ok := ev.Object.(*coordinationv1.Lease)
		if !ok || holder(le) != "replica-b" {
			return false, nil
		}
		lossesAtTakeover = a.metric(t, "lastcall_lease_losses_total", map[string]string{"reason": "deadline"})
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for replica b to take the lease: %v", err)
	}
	t.Logf("replica b took the lease %s after a was cut off", time.Since(cutAt).Round(100*time.Millisecond))
	if lossesAtTakeover != 1 {
		t.Fatalf("when b took the lease, a had given up %v leases for its renew deadline, want 1: both worked on the node", lossesAtTakeover)
	}
	if got := a.metric(t, "lastcall_lease_renewal_failures_total", nil); got < 1 {
		t.Errorf("a counted %v failed renewals, want at least one", got)
	}

	scaleTo(t, ns, "api", 2)
	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed and the message deleted", func() bool {
		_, ok := e.proxy.Completed(m.instance)
		return ok && e.depth(t) == 0
	})
	if got := b.metric(t, "lastcall_queue_messages_deleted_total", map[string]string{"reason": "processed"}); got != 1 {
		t.Errorf("replica b deleted %v messages as processed, want 1", got)
	}
}
