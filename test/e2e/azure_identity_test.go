package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

// azureSource is the Azure agent's source, as its metrics label it.
const azureSource = "azure-scheduled-events"

// Azure lists the scheduled events of every VM of an availability set or
// scale-set placement group to each of them: an agent acts on the events
// that name its own VM, and approves only those that name it alone.
func TestAzureEventsOfOtherVMsIgnored(t *testing.T) {
	ns := newNamespace(t)
	// Two instances of one scale set, named in the events as
	// <scale set>_<instance id>. The scale set's name differs in case
	// between the providerID and the events, as it may on AKS.
	vmss := fmt.Sprintf("aks-pool-%d-vmss", time.Now().UnixNano()%1_000_000)
	nodeA, vmA := newAzureNode(t, vmss, "0")
	nodeB, vmB := newAzureNode(t, vmss, "1")
	for _, n := range []string{nodeA, nodeB} {
		create(t, deployment(ns, n, 1, map[string]string{"kubernetes.io/hostname": n}, 30), env.Client.AppsV1().Deployments(ns).Create)
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool {
		return countReady(onNode(p, nodeA)) == 1 && countReady(onNode(p, nodeB)) == 1
	})
	touchedA := watchTouched(t, nodeA)

	az := startAzure(t)
	args := []string{"--cloud=azure", "--azure-endpoint=" + az.URL(), "--azure-acknowledge"}
	closed := closedURL(t)
	agentA := startAgent(t, nodeA, closed, args...)
	agentB := startAgent(t, nodeB, closed, args...)
	for name, a := range map[string]*agent{nodeA: agentA, nodeB: agentB} {
		eventually(t, "the agent of "+name+" reading scheduled events", func() bool {
			return a.metric(t, "lastcall_source_up", map[string]string{"source": azureSource}) == 1
		})
	}

	// An event for B alone: B drains, then approves it; A does nothing.
	const preempt = "5d1c1b0e-aaaa-4b1e-9c51-b-only"
	listed := time.Now()
	az.SetEvents(azuremeta.Event{EventID: preempt, EventType: "Preempt", Resources: []string{strings.ToUpper(vmB)},
		NotBefore: azuremeta.FormatTime(time.Now().Add(2 * time.Minute)), DurationInSeconds: -1})
	waitNode(t, nodeB, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return hasTaint(n, "lastcall.io/preemption") && len(st.Holds) == 1 && st.Holds[0].Drain == "success"
	})
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, nodeB)) == 0 })
	eventually(t, "B's approval", func() bool { return slices.Contains(az.Approved(), preempt) })
	// A has read the document since the event was listed (a read that
	// began after it), and received nothing from it.
	eventually(t, "A reading the document with B's event", func() bool {
		return agentA.metric(t, "lastcall_source_last_success_timestamp_seconds", map[string]string{"source": azureSource}) >
			float64(listed.Add(time.Second).UnixNano())/1e9
	})
	agentA.checkMetrics(t, []metricWant{
		{"lastcall_events_received_total", map[string]string{"source": azureSource}, 0},
		{"lastcall_actions_total", map[string]string{"action": "complete"}, 0},
	})
	agentB.checkMetrics(t, []metricWant{
		{"lastcall_actions_total", map[string]string{"action": "complete", "result": "success"}, 1},
	})
	if got := touchedA(); len(got) != 0 {
		t.Errorf("node %s (%s) was touched for an event of %s:\n%s", nodeA, vmA, vmB, strings.Join(got, "\n"))
	}
	if evs := lastcallEvents(t, nodeA); len(evs) != 0 {
		t.Errorf("Events on node %s for an event of %s: %v", nodeA, vmB, evs)
	}
	if pods := podsOn(t, ns, nodeA); countReady(pods) != 1 {
		t.Errorf("%d ready pods on %s, want its 1 left in place", countReady(pods), nodeA)
	}
	if got := az.Approved(); !slices.Equal(got, []string{preempt}) {
		t.Errorf("approved %v, want [%s] once", got, preempt)
	}

	// The Preempt is over and leaves the document; B is released. Then an
	// event names both VMs: both drain, and neither approves it, since
	// approving it would start it for the other VM too.
	az.SetEvents()
	waitNode(t, nodeB, func(n *corev1.Node) bool { return !n.Spec.Unschedulable && !hasTaint(n, "lastcall.io/preemption") })
	const reboot = "9e2d7c41-bbbb-4c0a-8f3e-both"
	az.SetEvents(azuremeta.Event{EventID: reboot, EventType: "Reboot", Resources: []string{vmA, vmB},
		NotBefore: azuremeta.FormatTime(time.Now().Add(15 * time.Minute)), DurationInSeconds: -1})
	for _, n := range []string{nodeA, nodeB} {
		waitNode(t, n, func(n *corev1.Node) bool {
			st, _ := node.StateOf(n)
			return hasTaint(n, "lastcall.io/host-maintenance") && len(st.Holds) == 1 && st.Holds[0].Drain == "success"
		})
	}
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, nodeA)) == 0 })
	// Each agent has run the step of the Reboot's notice: that is when it
	// would have approved it.
	eventually(t, "A's and B's steps after the Reboot's drain", func() bool {
		return agentA.metric(t, "lastcall_actions_total", map[string]string{"action": "complete", "result": "success"}) == 1 &&
			agentB.metric(t, "lastcall_actions_total", map[string]string{"action": "complete", "result": "success"}) == 2
	})
	if got := az.Approved(); !slices.Equal(got, []string{preempt}) {
		t.Errorf("approved %v, want only [%s]: the Reboot names two VMs", got, preempt)
	}
	for _, e := range az.Events() {
		if e.EventID == reboot && e.EventStatus != "Scheduled" {
			t.Errorf("the shared Reboot is %s, want Scheduled", e.EventStatus)
		}
	}
}

// An agent that cannot tell which VM it runs on refuses to start on Azure,
// saying what it tried, rather than take every VM's events for its own.
func TestAzureUnknownVMRefusesToStart(t *testing.T) {
	name := newNode(t, "azure-unknown", nil) // no providerID
	az := startAzure(t)                      // no compute name: 404
	o := options(t, "--node-name="+name, "--cloud=azure", "--azure-endpoint="+az.URL(), "--log-format=text")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil)).With("node", name)
	err = app.Run(ctx, o, app.Env{Client: client, Listener: ln, Log: log})
	if err == nil || ctx.Err() != nil {
		t.Fatalf("lastcall returned %v (context: %v), want it to refuse at once", err, ctx.Err())
	}
	for _, want := range []string{"azure", "no spec.providerID", "/metadata/instance/compute/name", "HTTP 404"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if n := az.ComputeNameRequests(); n != 1 {
		t.Errorf("instance metadata asked %d times, want once", n)
	}
	if r := az.Requests() - az.ComputeNameRequests(); r != 0 {
		t.Errorf("%d scheduled events requests before knowing the VM", r)
	}
}

// newAzureNode adds a node for instance id of scale set vmss, with the
// providerID cloud-provider-azure gives it, and returns the node's name and
// the VM's name as scheduled events give it.
func newAzureNode(t *testing.T, vmss, id string) (name, vm string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// AKS names the node as the VM's computer name: the scale set's
	// prefix and the instance id in base 36, on six digits.
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	name = fmt.Sprintf("%s%06s", vmss, strconv.FormatInt(n, 36))
	providerID := "azure:///subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mc_rg_aks_westeurope" +
		"/providers/Microsoft.Compute/virtualMachineScaleSets/" + vmss + "/virtualMachines/" + id
	if _, err := env.AddNode(ctx, name, cluster.WithProviderID(providerID)); err != nil {
		t.Fatalf("adding node: %v", err)
	}
	return name, vmss + "_" + id
}

// watchTouched watches the node from now on, and returns a func that stops
// the watch and lists each moment lastcall was seen to have touched it
// (cordoned, tainted or annotated).
func watchTouched(t *testing.T, name string) func() []string {
	t.Helper()
	return recordNode(t, name, func(n *corev1.Node) string {
		if !touched(n) {
			return ""
		}
		return fmt.Sprintf("resourceVersion %s: unschedulable %v, taints %v, state %s",
			n.ResourceVersion, n.Spec.Unschedulable, n.Spec.Taints, n.Annotations[node.AnnotationState])
	})
}

// podsOn lists the pods of ns on the node.
func podsOn(t *testing.T, ns, name string) []*corev1.Pod {
	t.Helper()
	list, err := env.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		pods = append(pods, &list.Items[i])
	}
	return pods
}

// lastcallEvents lists the reasons of the Events lastcall recorded on the
// node.
func lastcallEvents(t *testing.T, name string) []string {
	t.Helper()
	list, err := env.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range list.Items {
		if e.Source.Component == "lastcall" {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}
