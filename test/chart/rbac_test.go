package chart_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/plan"
)

func schemaGVR(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// installRBAC creates the chart's ServiceAccount and RBAC objects for real
// and returns a client impersonating the ServiceAccount.
func installRBAC(t *testing.T, release, ns string, values map[string]any) kubernetes.Interface {
	t.Helper()
	ctx := testContext(t)
	dyn := dynamic.NewForConfigOrDie(env.Config)
	resources := map[string]schema.GroupVersionResource{
		"ServiceAccount":     schemaGVR("", "v1", "serviceaccounts"),
		"ClusterRole":        schemaGVR("rbac.authorization.k8s.io", "v1", "clusterroles"),
		"ClusterRoleBinding": schemaGVR("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
		"Role":               schemaGVR("rbac.authorization.k8s.io", "v1", "roles"),
		"RoleBinding":        schemaGVR("rbac.authorization.k8s.io", "v1", "rolebindings"),
	}
	var sa string
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
			sa = o.GetName()
		}
		if o.GetNamespace() == "" {
			t.Cleanup(func() { _ = dyn.Resource(gvr).Delete(context.Background(), o.GetName(), metav1.DeleteOptions{}) })
		}
	}
	if sa == "" {
		t.Fatal("the chart rendered no ServiceAccount")
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa)}
	return kubernetes.NewForConfigOrDie(cfg)
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

// TestRBACAllowsADrainAndNothingMore impersonates the chart's
// ServiceAccount on the real API server. It may do everything a drain does
// (checked with SelfSubjectAccessReviews, then by running one under it) and
// nothing around it.
func TestRBACAllowsADrainAndNothingMore(t *testing.T) {
	for _, mode := range []string{"agent", "queue"} {
		t.Run(mode, func(t *testing.T) {
			ns := createNamespace(t, "lastcall-rbac-"+mode)
			values := map[string]any{"mode": mode}
			if mode == "queue" {
				values["queue"] = map[string]any{"url": queueURL}
			}
			sa := installRBAC(t, "rbac-"+mode, ns, values)
			other := "kube-system"
			must := []access{
				{"get", "", "nodes", "", ""}, {"list", "", "nodes", "", ""}, {"watch", "", "nodes", "", ""}, {"patch", "", "nodes", "", ""},
				{"get", "", "pods", "", "default"}, {"list", "", "pods", "", ""}, {"watch", "", "pods", "", ""},
				{"delete", "", "pods", "", "default"}, {"delete", "", "pods", "", other}, // graceful-override
				{"create", "", "pods", "eviction", "default"}, {"create", "", "pods", "eviction", other},
				{"list", "policy", "poddisruptionbudgets", "", ""}, {"watch", "policy", "poddisruptionbudgets", "", ""},
				{"list", "", "services", "", ""}, {"watch", "", "services", "", ""},
				{"create", "", "events", "", "default"}, {"patch", "", "events", "", "default"},
			}
			mustNot := []access{
				{"update", "", "nodes", "", ""}, {"delete", "", "nodes", "", ""}, {"create", "", "nodes", "", ""},
				{"patch", "", "nodes", "status", ""}, {"get", "", "nodes", "proxy", ""},
				{"create", "", "pods", "", "default"}, {"update", "", "pods", "", "default"},
				{"patch", "", "pods", "", "default"}, {"create", "", "pods", "exec", "default"}, {"get", "", "pods", "log", "default"},
				{"get", "", "secrets", "", ns}, {"list", "", "secrets", "", ""}, {"get", "", "configmaps", "", ns},
				{"delete", "", "events", "", "default"},
				{"update", "apps", "daemonsets", "", ns}, {"delete", "apps", "deployments", "", "default"},
				{"update", "policy", "poddisruptionbudgets", "", "default"}, {"delete", "policy", "poddisruptionbudgets", "", "default"},
				{"create", "policy", "poddisruptionbudgets", "", "default"}, {"update", "", "services", "", "default"},
				{"delete", "", "services", "", "default"}, {"list", "", "endpoints", "", ""},
				{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""},
				{"delete", "coordination.k8s.io", "leases", "", ns}, {"get", "coordination.k8s.io", "leases", "", other},
				{"create", "coordination.k8s.io", "leases", "", other}, {"update", "coordination.k8s.io", "leases", "", "default"},
			}
			leases := []access{
				{"get", "coordination.k8s.io", "leases", "", ns}, {"create", "coordination.k8s.io", "leases", "", ns},
				{"update", "coordination.k8s.io", "leases", "", ns},
			}
			if mode == "queue" {
				must = append(must, leases...)
			} else {
				mustNot = append(mustNot, leases...)
			}
			for _, a := range must {
				if !allowed(t, sa, a) {
					t.Errorf("the ServiceAccount may not %s; a drain needs it", a)
				}
			}
			for _, a := range mustNot {
				if allowed(t, sa, a) {
					t.Errorf("the ServiceAccount may %s; nothing lastcall does needs it", a)
				}
			}
			drainAs(t, sa, ns, mode == "queue")
		})
	}
}

// drainAs runs a drain with client, as the modes do: node and pod
// informers, a hold (taint, cordon, label, annotation), evictions, Events,
// and in queue mode the node's Lease.
func drainAs(t *testing.T, client kubernetes.Interface, ns string, withLease bool) {
	t.Helper()
	ctx := testContext(t)
	name := fmt.Sprintf("rbac-%d", time.Now().UnixNano())
	if _, err := env.AddNode(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	podNS := createNamespace(t, "rbac-pods")
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

	// Plan the drain as the drainability gauge and lastcall plan do, from
	// every PodDisruptionBudget and Service of the cluster, listed and
	// watched under the ServiceAccount. A Service sends the pods traffic and
	// they have no preStop hook: a blocker each.
	_, err = env.Client.CoreV1().Services(podNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "rbac"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	planFactory := informers.NewSharedInformerFactory(client, 0)
	budgets, services := planFactory.Policy().V1().PodDisruptionBudgets(), planFactory.Core().V1().Services()
	budgetsSynced, servicesSynced := budgets.Informer().HasSynced, services.Informer().HasSynced
	planFactory.Start(ictx.Done())
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

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "lastcall"})

	if withLease {
		held, err := lease.NewLocker(client, ns, "rbac-test", 15*time.Second, clock.RealClock{}, log).Acquire(ctx, name)
		if err != nil {
			t.Fatalf("taking the node's Lease as the ServiceAccount: %v", err)
		}
		defer held.Release(context.Background())
	}
	ev := interruption.Event{ID: interruption.NewID(interruption.KindSpotInterruption, name), Kind: interruption.KindSpotInterruption,
		Action: interruption.ActionDrain, Source: "test", Deadline: time.Now().Add(time.Minute)}
	nodes := node.NewClient(client, nodeLister.Get, clock.RealClock{}, node.OwnerAgent, false, log)
	if _, err := nodes.Hold(ctx, name, ev); err != nil {
		t.Fatalf("holding the node as the ServiceAccount: %v", err)
	}
	recorder.Eventf(node.Ref(name), corev1.EventTypeNormal, "Cordoned", "RBAC test")
	d := drain.New(client, index, recorder, prometheus.NewRegistry(), log, clock.RealClock{}, drain.DefaultOptions())
	res, err := d.Drain(ctx, drain.Request{Node: name, Kind: string(ev.Kind), Deadline: ev.Deadline, Why: "RBAC test"})
	if err != nil {
		t.Fatalf("draining as the ServiceAccount: %v (result %+v)", err, res)
	}
	if res.Evicted != 3 {
		t.Errorf("evicted %d pods, want 3", res.Evicted)
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
