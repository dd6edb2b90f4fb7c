package e2e

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
	"github.com/lastcall/lastcall/test/emulators/gcemeta"
)

// closedURL is an address where nothing listens: a metadata service that
// refuses at once.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String()
}

func startGCE(t *testing.T) *gcemeta.Server {
	t.Helper()
	s, err := gcemeta.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Setenv("GCE_METADATA_HOST", s.Host())
	return s
}

func startAzure(t *testing.T) *azuremeta.Server {
	t.Helper()
	s, err := azuremeta.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Auto-detection picks the cloud whose metadata service answers, and says
// clearly when none does.
func TestCloudDetection(t *testing.T) {
	ctx := context.Background()
	closed := closedURL(t)
	detect := func(aws, gce, azure string) (string, error) {
		t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(gce, "http://"))
		o := options(t, "--node-name=n", "--imds-endpoint="+aws, "--azure-endpoint="+azure)
		p, err := app.Detect(ctx, o)
		if err != nil {
			return "", err
		}
		return p.Name(), nil
	}
	if c, err := detect(startAEMM(t, quietAEMM()).URL(), closed, closed); c != "aws" {
		t.Errorf("with EC2 metadata: %q, %v", c, err)
	}
	g := startGCE(t)
	if c, err := detect(closed, "http://"+g.Host(), closed); c != "gce" {
		t.Errorf("with GCE metadata: %q, %v", c, err)
	}
	if c, err := detect(closed, closed, startAzure(t).URL()); c != "azure" {
		t.Errorf("with Azure metadata: %q, %v", c, err)
	}
	_, err := detect(closed, closed, closed)
	if err == nil || !strings.Contains(err.Error(), "no cloud metadata service answered") ||
		!strings.Contains(err.Error(), "aws:") || !strings.Contains(err.Error(), "gce:") || !strings.Contains(err.Error(), "azure:") {
		t.Fatalf("with none: %v", err)
	}
}

// gceAgent runs the agent, auto-detecting GCE (the other clouds refuse).
func gceAgent(t *testing.T, name string) *agent {
	t.Helper()
	closed := closedURL(t)
	return startAgent(t, name, closed, "--cloud=auto", "--azure-endpoint="+closed)
}

// A GCE preemption flip cordons the node within a second and drains it,
// PDBs honoured, inside the 30 s window.
func TestGCEPreemptionDrainsWithinWindow(t *testing.T) {
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	name := newNode(t, "gce", pool)
	create(t, deployment(ns, "web", 2, pool, 60), env.Client.AppsV1().Deployments(ns).Create)
	create(t, pdb(ns, "web", 1), env.Client.PolicyV1().PodDisruptionBudgets(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })
	newNode(t, "gce-spare", pool)
	deletions := watchDeletions(t, name)
	g := startGCE(t)
	a := gceAgent(t, name)
	eventually(t, "the GCE sources up", func() bool {
		return a.metric(t, "lastcall_source_up", map[string]string{"source": "gce-preempted"}) == 1
	})

	flipped := time.Now()
	g.Set("instance/preempted", "TRUE")
	n := waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	if took := time.Since(flipped); took > time.Second {
		t.Errorf("cordoned %s after the preemption flip, want under 1 s", took)
	}
	if !hasTaint(n, "lastcall.io/preemption") {
		t.Errorf("taints %v", n.Spec.Taints)
	}
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	if took := time.Since(flipped); took > 30*time.Second {
		t.Errorf("drained %s after the flip: outside the 30 s window", took)
	}
	// The pods went through the Eviction API under their budget; each was
	// told to stop in time to be gone 5 s before the window closed (GKE
	// Spot caps grace at 25 s).
	for _, d := range deletions() {
		if d.grace == nil || *d.grace > 25 {
			t.Errorf("pod %s evicted with grace %v: 60 s does not fit a 30 s window", d.name, d.grace)
		}
	}
}

// TERMINATE_ON_HOST_MAINTENANCE drains; MIGRATE_ON_HOST_MAINTENANCE only
// gets an Event.
func TestGCEMaintenanceTerminateDrainsMigrateDoesNot(t *testing.T) {
	migrate := newNode(t, "gce-migrate", nil)
	g := startGCE(t)
	a := gceAgent(t, migrate)
	g.Set("instance/maintenance-event", "MIGRATE_ON_HOST_MAINTENANCE")
	waitEvents(t, "default", migrate, "MaintenanceNotice")
	if n := waitNode(t, migrate, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable {
		t.Fatal("a live migration cordoned the node")
	}
	g.Set("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE")
	waitNode(t, migrate, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return hasTaint(n, "lastcall.io/host-maintenance") && len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	if got := a.metric(t, "lastcall_events_received_total", map[string]string{"kind": "host-maintenance", "action": "notify"}); got != 1 {
		t.Errorf("migrate notices counted %v, want 1", got)
	}
}

// Azure Preempt drains the node, then approves the event (StartRequests).
// The node has no providerID: the agent learns its VM's name from
// instance metadata.
func TestAzurePreemptDrainsThenAcknowledges(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "azure", nil)
	create(t, deployment(ns, "web", 2, map[string]string{"kubernetes.io/hostname": name}, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })
	az := startAzure(t)
	az.SetComputeName(name)
	closed := closedURL(t)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(closed, "http://"))
	startAgent(t, name, closed, "--cloud=auto", "--azure-endpoint="+az.URL(), "--azure-acknowledge")
	az.SetEvents(azuremeta.Event{EventID: "0b0c6d5e-spot", EventType: "Preempt", ResourceType: "VirtualMachine",
		Resources: []string{name}, EventStatus: "Scheduled", NotBefore: time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)})
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return hasTaint(n, "lastcall.io/preemption") && len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
	eventually(t, "the event approved", func() bool {
		for _, id := range az.Approved() {
			if id == "0b0c6d5e-spot" {
				return true
			}
		}
		return false
	})
}
