package chart_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/drainability"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/plan"
)

func schemaGVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// installRBAC creates the chart's ServiceAccounts and RBAC objects for real
// and returns, for each component (the ServiceAccount's
// app.kubernetes.io/component label), a client impersonating its
// ServiceAccount.
func installRBAC(t *testing.T, release, ns string, values map[string]any) map[string]kubernetes.Interface {
	t.Helper()
	ctx := testContext(t)
	dyn := dynamic.NewForConfigOrDie(env.Config)
	resources := map[string]schema.GroupVersionResource{
		"ServiceAccount":     schemaGVR("", "v1", "serviceaccounts"),
		"ClusterRole":        schemaGVR("rbac.authorization.k8s.io", "v1", "clusterroles"),
		"ClusterRoleBinding": schemaGVR("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
		"Role":               schemaGVR("rbac.authorization.k8s.io", "v1", "roles"),
		"RoleBinding":        schemaGVR("rbac.authorization.k8s.io", "v1", "rolebindings"),
		// rbac.ownNodeOnly: the policy confining each agent to its node.
		"ValidatingAdmissionPolicy":        schemaGVR("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"),
		"ValidatingAdmissionPolicyBinding": schemaGVR("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings"),
	}
	clients := map[string]kubernetes.Interface{}
	for _, o := range render(t, release, ns, values) {
		gvr, ok := resources[o.GetKind()]
		if !ok {
			continue
		}
		var r dynamic.ResourceInterface = dyn.Resource(gvr)
		if o.GetNamespace() != "" {
			r = dyn.Resource(gvr).Namespace(o.GetNamespace())
		}
		if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "lastcall-test"}); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "ServiceAccount" {
			cfg := rest.CopyConfig(env.Config)
			cfg.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:%s", ns, o.GetName())}
			clients[o.GetLabels()["app.kubernetes.io/component"]] = kubernetes.NewForConfigOrDie(cfg)
		}
		if o.GetNamespace() == "" {
			t.Cleanup(func() { _ = dyn.Resource(gvr).Delete(context.Background(), o.GetName(), metav1.DeleteOptions{}) })
		}
	}
	if len(clients) == 0 {
		t.Fatal("the chart rendered no ServiceAccount")
	}
	return clients
}

type access struct {
	verb, group, resource, subresource, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.group != "" {
		r += "." + a.group
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

// allowed asks the API server, as the impersonated ServiceAccount, whether
// it may do a.
func allowed(t *testing.T, c kubernetes.Interface, a access) bool {
	t.Helper()
	r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(testContext(t), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview for %s: %v", a, err)
	}
	return r.Status.Allowed
}

// What the components may do, as SelfSubjectAccessReviews ask it.
var (
	// drainAccess is what a drain does: hold the node, evict (delete under
	// graceful-override), set the condition of lastcall's readiness gate,
	// watch pods until they are gone, watch the budgets of a namespace whose
	// pods it was refused to evict, record Events.
	drainAccess = []access{
		{"get", "", "nodes", "", ""}, {"list", "", "nodes", "", ""}, {"watch", "", "nodes", "", ""}, {"patch", "", "nodes", "", ""},
		{"get", "", "pods", "", "default"}, {"list", "", "pods", "", ""}, {"watch", "", "pods", "", ""},
		{"delete", "", "pods", "", "default"}, {"delete", "", "pods", "", "kube-system"}, // graceful-override
		{"create", "", "pods", "eviction", "default"}, {"create", "", "pods", "eviction", "kube-system"},
		{"patch", "", "pods", "status", "default"}, // the readiness gate's condition
		{"list", "discovery.k8s.io", "endpointslices", "", "default"}, {"watch", "discovery.k8s.io", "endpointslices", "", "default"},
		{"list", "policy", "poddisruptionbudgets", "", "default"}, {"watch", "policy", "poddisruptionbudgets", "", "default"},
		{"list", "storage.k8s.io", "volumeattachments", "", ""}, {"watch", "storage.k8s.io", "volumeattachments", "", ""},
		{"create", "", "events", "", "default"}, {"patch", "", "events", "", "default"},
	}
	// planAccess is what keeping every node's drainability does: watch
	// every node, pod, budget and Service, record Events.
	planAccess = []access{
		{"list", "", "nodes", "", ""}, {"watch", "", "nodes", "", ""}, {"list", "", "pods", "", ""}, {"watch", "", "pods", "", ""},
		{"list", "policy", "poddisruptionbudgets", "", ""}, {"watch", "policy", "poddisruptionbudgets", "", ""},
		{"list", "", "services", "", ""}, {"watch", "", "services", "", ""},
		{"create", "", "events", "", "default"}, {"patch", "", "events", "", "default"},
	}
	// servicesAccess is planAccess's beyond a drain's.
	servicesAccess = []access{{"list", "", "services", "", ""}, {"watch", "", "services", "", ""}}
	// writesAccess is a drain's writes, and the reads it does beyond
	// planning's.
	writesAccess = []access{
		{"get", "", "nodes", "", ""}, {"patch", "", "nodes", "", ""}, {"get", "", "pods", "", "default"},
		{"delete", "", "pods", "", "default"}, {"create", "", "pods", "eviction", "default"},
		{"patch", "", "pods", "status", "default"}, {"list", "discovery.k8s.io", "endpointslices", "", "default"},
		{"list", "storage.k8s.io", "volumeattachments", "", ""},
	}
	// neverAccess is what no component does.
	neverAccess = []access{
		{"update", "", "nodes", "", ""}, {"delete", "", "nodes", "", ""}, {"create", "", "nodes", "", ""},
		{"patch", "", "nodes", "status", ""}, {"get", "", "nodes", "proxy", ""},
		{"create", "", "pods", "", "default"}, {"update", "", "pods", "", "default"},
		{"patch", "", "pods", "", "default"}, {"update", "", "pods", "status", "default"},
		{"create", "", "pods", "exec", "default"}, {"get", "", "pods", "log", "default"},
		{"list", "", "secrets", "", ""}, {"get", "", "secrets", "", "default"}, {"get", "", "configmaps", "", "default"},
		{"delete", "", "events", "", "default"},
		{"update", "apps", "daemonsets", "", "default"}, {"delete", "apps", "deployments", "", "default"},
		{"get", "policy", "poddisruptionbudgets", "", "default"},
		{"update", "policy", "poddisruptionbudgets", "", "default"}, {"delete", "policy", "poddisruptionbudgets", "", "default"},
		{"create", "policy", "poddisruptionbudgets", "", "default"}, {"get", "", "services", "", "default"},
		{"update", "", "services", "", "default"}, {"delete", "", "services", "", "default"}, {"list", "", "endpoints", "", ""},
		{"update", "discovery.k8s.io", "endpointslices", "", "default"},
		{"delete", "storage.k8s.io", "volumeattachments", "", ""}, {"update", "storage.k8s.io", "volumeattachments", "", ""},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""},
		{"get", "coordination.k8s.io", "leases", "", "kube-system"}, {"create", "coordination.k8s.io", "leases", "", "kube-system"},
		{"update", "coordination.k8s.io", "leases", "", "default"},
	}
)

// leasesAccess is the queue processor's per-node Leases, in ns.
func leasesAccess(ns string) []access {
	return []access{
		{"get", "coordination.k8s.io", "leases", "", ns}, {"create", "coordination.k8s.io", "leases", "", ns},
		{"update", "coordination.k8s.io", "leases", "", ns}, {"delete", "coordination.k8s.io", "leases", "", ns},
	}
}

// TestRBACAllowsADrainAndNothingMore impersonates each component's
// ServiceAccount on the real API server. Each may do everything its work
// needs (checked with SelfSubjectAccessReviews, then by doing that work
// under it: a drain, or keeping every node's drainability) and nothing
// around it.
func TestRBACAllowsADrainAndNothingMore(t *testing.T) {
	for _, mode := range []string{"agent", "queue"} {
		t.Run(mode, func(t *testing.T) {
			ns := createNamespace(t, "lastcall-rbac-"+mode)
			values := map[string]any{"mode": mode}
			if mode == "queue" {
				values["queue"] = map[string]any{"url": queueURL}
			}
			clients := installRBAC(t, "rbac-"+mode, ns, values)
			leases := leasesAccess(ns)
			for _, tc := range []struct {
				component     string
				must, mustNot []access
				work          func(t *testing.T, client kubernetes.Interface)
			}{
				{"agent", drainAccess, concat(neverAccess, servicesAccess, leases),
					func(t *testing.T, c kubernetes.Interface) { drainAs(t, c, ns, drainWith{}) }},
				{"drainability", planAccess, concat(neverAccess, writesAccess, leases), drainabilityAs},
				{"queue", concat(drainAccess, planAccess, leases[:3]), concat(neverAccess, leases[3:]),
					func(t *testing.T, c kubernetes.Interface) { drainAs(t, c, ns, drainWith{lease: true, plan: true}) }},
			} {
				client, ok := clients[tc.component]
				if (mode == "agent") == (tc.component == "queue") {
					if ok {
						t.Errorf("mode %s has a ServiceAccount for the %s", mode, tc.component)
					}
					continue
				}
				if !ok {
					t.Fatalf("mode %s has no ServiceAccount for the %s (it has %v)", mode, tc.component, slices.Sorted(maps.Keys(clients)))
				}
				t.Run(tc.component, func(t *testing.T) {
					for _, a := range tc.must {
						if !allowed(t, client, a) {
							t.Errorf("the %s's ServiceAccount may not %s; its work needs it", tc.component, a)
						}
					}
					for _, a := range tc.mustNot {
						if allowed(t, client, a) {
							t.Errorf("the %s's ServiceAccount may %s; nothing it does needs it", tc.component, a)
						}
					}
					tc.work(t, client)
				})
			}
		})
	}
}

func concat(lists ...[]access) []access { return slices.Concat(lists...) }

// drainWith is what a drain does beyond the agent's.
type drainWith struct {
	// lease: take the node's Lease first (queue mode).
	lease bool
	// plan: plan the drain ahead from every budget and Service, as the
	// queue processor's drainability does.
	plan bool
	// node and podNS, when set, are the node to drain and its pods'
	// namespace: three ready pods labelled app=rbac (nodeWithPods makes
	// them otherwise).
	node, podNS string
	// host is the Events' source host: the agent records its node's name.
	host string
	// self is the agent's own pod, which the drain leaves.
	self types.NamespacedName
	// window is the time from the hold to the deadline: a minute when 0.
	window time.Duration
	// evicted and overridden are the pods the drain must take off the node
	// (Result.Evicted, deletions despite a budget included), and delete
	// despite their budget: 3 and 0 when both are 0.
	evicted, overridden int
}

// nodeWithPods adds a node running three ready pods labelled app=rbac, in
// a namespace of their own, and returns the node and the namespace.
func nodeWithPods(t *testing.T) (name, podNS string) {
	t.Helper()
	ctx := testContext(t)
	name = fmt.Sprintf("rbac-%d", time.Now().UnixNano())
	if _, err := env.AddNode(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	podNS = createNamespace(t, "rbac-pods")
	for i := range 3 {
		_, err := env.Client.CoreV1().Pods(podNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": "rbac"}},
			Spec: corev1.PodSpec{
				NodeName: name, TerminationGracePeriodSeconds: ptr.To[int64](1),
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers:  []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := env.WaitPodsReady(ctx, podNS, "app=rbac", 3); err != nil {
		t.Fatal(err)
	}
	return name, podNS
}

// createService creates a Service in front of the app=rbac pods of ns.
func createService(ctx context.Context, t *testing.T, ns string) {
	t.Helper()
	_, err := env.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "rbac"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// drainabilityAs runs lastcall --mode=drainability, as the chart does,
// with client, until it has exported the gauge of a node whose pods sit
// behind a Service without a preStop hook and recorded a DrainBlocked
// Event on it.
func drainabilityAs(t *testing.T, client kubernetes.Interface) {
	ctx := testContext(t)
	name, podNS := nodeWithPods(t)
	createService(ctx, t, podNS)

	ln := runDrainability(t, client, "the drainability process under the ServiceAccount")

	want := fmt.Sprintf(`lastcall_drain_blockers{node=%q,reason=%q} 3`, name, plan.ReasonNoPreStop)
	base := "http://" + ln.Addr().String()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		ready, err := httpGet(ctx, base+"/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if last = "readyz: " + ready; !strings.Contains(ready, "ok") {
			return false, nil
		}
		metrics, err := httpGet(ctx, base+"/metrics")
		if err != nil {
			return false, err
		}
		last = "no " + want + " in /metrics"
		return strings.Contains(metrics, want), nil
	})
	if err != nil {
		t.Fatalf("the drainability process under the ServiceAccount: %v (%s)", err, last)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := env.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.name", name), fields.OneTermEqualSelector("reason", drainability.ReasonBlocked)).String()})
		if err != nil {
			return false, err
		}
		return len(evs.Items) > 0, nil
	})
	if err != nil {
		t.Errorf("no %s Event recorded on the node under the ServiceAccount: %v", drainability.ReasonBlocked, err)
	}
}

// runDrainability runs lastcall --mode=drainability, with further args,
// as client until the test ends, and returns its listener. what names it
// in the error it may return.
func runDrainability(t *testing.T, client kubernetes.Interface, what string, args ...string) net.Listener {
	t.Helper()
	o, err := app.Parse(append([]string{"--mode=drainability", "--cloud=aws", "--log-format=text"}, args...),
		func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, o, app.Env{Client: client, Listener: ln, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
	return ln
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// drainAs runs a drain with client, as the modes do: node and pod
// informers, the budgets of the pods' namespace, a hold (taint, cordon,
// label, annotation), evictions, Events, and with.lease the node's Lease.
func drainAs(t *testing.T, client kubernetes.Interface, ns string, with drainWith) {
	t.Helper()
	ctx := testContext(t)
	name, podNS := with.node, with.podNS
	if name == "" {
		name, podNS = nodeWithPods(t)
	}
	if with.window == 0 {
		with.window = time.Minute
	}
	if with.evicted == 0 && with.overridden == 0 {
		with.evicted = 3
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", name).String()
		}))
	podInformer := factory.Core().V1().Pods().Informer()
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	nodeLister := nodeFactory.Core().V1().Nodes().Lister()
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	factory.Start(ictx.Done())
	nodeFactory.Start(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced, nodeFactory.Core().V1().Nodes().Informer().HasSynced) {
		t.Fatal("informers under the ServiceAccount did not sync (list/watch refused?)")
	}
	index, err := drain.NewInformerIndex(podInformer)
	if err != nil {
		t.Fatal(err)
	}
	// A drain refused an eviction watches the budgets of the pod's
	// namespace while it lasts.
	budgetFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(podNS))
	nsBudgetsSynced := budgetFactory.Policy().V1().PodDisruptionBudgets().Informer().HasSynced
	budgetFactory.Start(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsBudgetsSynced) {
		t.Fatal("the PodDisruptionBudget informer of the pods' namespace under the ServiceAccount did not sync (list/watch refused?)")
	}
	if with.plan {
		planAs(ictx, t, client, name, podNS, index)
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "lastcall", Host: with.host})

	if with.lease {
		held, err := lease.NewLocker(client, ns, "rbac-test", 15*time.Second, clock.RealClock{}, log).Acquire(ctx, name)
		if err != nil {
			t.Fatalf("taking the node's Lease as the ServiceAccount: %v", err)
		}
		defer held.Release(context.Background())
	}
	ev := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, name), Kind: interruption.KindSpotInterruption,
		Action: interruption.ActionDrain, Source: "test", Deadline: time.Now().Add(with.window)}
	nodes := node.NewClient(client, nodeLister.Get, clock.RealClock{}, node.OwnerAgent, false, log)
	if _, err := nodes.Hold(ctx, name, ev); err != nil {
		t.Fatalf("holding the node as the ServiceAccount: %v", err)
	}
	recorder.Eventf(node.Ref(name), corev1.EventTypeNormal, "Cordoned", "RBAC test")
	opts := drain.DefaultOptions()
	opts.Self = with.self
	d := drain.New(client, index, recorder, prometheus.NewRegistry(), log, clock.RealClock{}, opts)
	res, err := d.Drain(ctx, drain.Request{Node: name, Kind: string(ev.Kind), Deadline: ev.Deadline, Why: "RBAC test"})
	if err != nil {
		t.Fatalf("draining as the ServiceAccount: %v (result %+v)", err, res)
	}
	if res.Evicted != with.evicted || len(res.Overridden) != with.overridden {
		t.Errorf("took %d pods off the node, %v of them deleted despite their budget; want %d and %d", res.Evicted, res.Overridden, with.evicted, with.overridden)
	}
	if err := nodes.RecordDrain(ctx, name, "success", ev.ID); err != nil {
		t.Fatalf("recording the drain as the ServiceAccount: %v", err)
	}
	n, err := env.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !n.Spec.Unschedulable || n.Annotations[node.AnnotationState] == "" {
		t.Errorf("node not cordoned with state recorded: unschedulable=%v state=%q", n.Spec.Unschedulable, n.Annotations[node.AnnotationState])
	}
	// The Events were written under the ServiceAccount: wait for them.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := env.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
		if err != nil {
			return false, err
		}
		return len(evs.Items) > 0, nil
	})
	if err != nil {
		t.Errorf("no Event recorded on the node under the ServiceAccount: %v", err)
	}
	// And nothing beyond: the ServiceAccount cannot delete what it drained.
	err = client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("deleting the node as the ServiceAccount: got %v, want Forbidden", err)
	}
}

// planAs plans the node's drain as the queue processor's drainability
// does, from every PodDisruptionBudget and Service of the cluster, listed
// and watched under client. A Service sends the node's pods traffic and
// they have no preStop hook: a blocker each. The informers run until ctx
// ends.
func planAs(ctx context.Context, t *testing.T, client kubernetes.Interface, name, podNS string, index *drain.InformerIndex) {
	t.Helper()
	createService(ctx, t, podNS)
	planFactory := informers.NewSharedInformerFactory(client, 0)
	budgets, services := planFactory.Policy().V1().PodDisruptionBudgets(), planFactory.Core().V1().Services()
	budgetsSynced, servicesSynced := budgets.Informer().HasSynced, services.Informer().HasSynced
	planFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), budgetsSynced, servicesSynced) {
		t.Fatal("PodDisruptionBudget and Service informers under the ServiceAccount did not sync (list/watch refused?)")
	}
	pods, err := index.OnNode(name)
	if err != nil {
		t.Fatal(err)
	}
	in := plan.Inputs{Node: name, Now: time.Now(), Deadline: time.Now().Add(time.Minute), Pods: pods}
	if in.Budgets, err = budgets.Lister().List(labels.Everything()); err != nil {
		t.Fatal(err)
	}
	if in.Services, err = services.Lister().List(labels.Everything()); err != nil {
		t.Fatal(err)
	}
	if got := plan.Build(in, drain.DefaultOptions()).Counts()[plan.ReasonNoPreStop]; got != 3 {
		t.Errorf("planned under the ServiceAccount: %d pods behind a Service without a preStop hook, want 3", got)
	}
}
