package chart_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// agentServiceAccount is the name of the agent's ServiceAccount the chart
// renders for release in ns with values.
func agentServiceAccount(t *testing.T, release, ns string, values map[string]any) string {
	t.Helper()
	for _, o := range render(t, release, ns, values) {
		if o.GetKind() == "ServiceAccount" && o.GetLabels()["app.kubernetes.io/component"] == "agent" {
			return o.GetName()
		}
	}
	t.Fatal("the chart rendered no ServiceAccount for the agent")
	return ""
}

// addNode adds a Ready kwok node, deleted at the end of the test.
func addNode(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	if _, err := env.AddNode(testContext(t), name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// createPod creates a pod of ns on node, running as serviceAccount when
// not empty, with labels.
func createPod(t *testing.T, ns, name, node, serviceAccount string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p, err := env.Client.CoreV1().Pods(ns).Create(testContext(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: serviceAccount, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers:  []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tokenRequest asks for a token of an hour, bound to nothing.
func tokenRequest() *authenticationv1.TokenRequest {
	return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
}

// tokenClient returns a client acting with a token of the ServiceAccount
// sa of ns, requested through TokenRequest: bound to pod when not nil, as
// the kubelet's projected token is, or bound to nothing.
func tokenClient(t *testing.T, ns, sa string, pod *corev1.Pod) kubernetes.Interface {
	t.Helper()
	req := tokenRequest()
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(testContext(t), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tr.Status.Token
	return kubernetes.NewForConfigOrDie(cfg)
}

// The policy's messages, as the README and the chart word them.
const (
	ownNodeMessage   = "may change only its own node"
	ownPodsMessage   = "may delete or set the status of pods on its own node only"
	ownEventsMessage = "may record Events only about its own node"
	boundMessage     = "must use the ServiceAccount token the kubelet gives its pod"
)

// refused fails the test unless err is the policy's refusal saying want.
func refused(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: allowed, want refused by the policy (%q)", what, want)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v, want refused by the policy (%q)", what, err, want)
	case !strings.Contains(err.Error(), want):
		t.Errorf("%s: refused with %q, want the policy's %q", what, err, want)
	}
}

func labelNode(ctx context.Context, c kubernetes.Interface, node string) error {
	_, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"lastcall.test/touched":"yes"}}}`), metav1.PatchOptions{})
	return err
}

func setServing(ctx context.Context, c kubernetes.Interface, ns, pod string) error {
	_, err := c.CoreV1().Pods(ns).Patch(ctx, pod, types.StrategicMergePatchType,
		[]byte(`{"status":{"conditions":[{"type":"lastcall.io/serving","status":"True"}]}}`), metav1.PatchOptions{}, "status")
	return err
}

func nodeEvent(ctx context.Context, c kubernetes.Interface, about, host string) error {
	_, err := c.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "own-node-"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: about, UID: types.UID(about)},
		Reason:         "OwnNodeTest", Message: "test", Type: corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: "lastcall", Host: host},
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}, metav1.CreateOptions{})
	return err
}

// TestAgentChangesOnlyItsOwnNode renders the chart with rbac.ownNodeOnly,
// applies its ServiceAccount, RBAC and ValidatingAdmissionPolicy to the
// API server, and acts as the agents of two nodes A and B with
// ServiceAccount tokens bound to a pod on each (TokenRequest, as the
// kubelet asks them). Agent A may patch node A, delete a pod on it, set a
// pod's status on it and record Events about it; it is refused, with the
// policy's message, each of these on node B. A token bound to no pod is
// refused every change. An eviction is not confined: agent A may ask to
// evict a pod on node B, and the pod's budget still refuses it. Then a
// whole drain of node A runs under agent A's token: hold, evictions, an
// override delete (graceful-override) and Events.
func TestAgentChangesOnlyItsOwnNode(t *testing.T) {
	ctx := testContext(t)
	ns := createNamespace(t, "lastcall-own")
	values := map[string]any{"rbac": map[string]any{"ownNodeOnly": true}}
	installRBAC(t, "own", ns, values)
	sa := agentServiceAccount(t, "own", ns, values)

	nodeA, nodeB := addNode(t, "own-a"), addNode(t, "own-b")
	podA := createPod(t, ns, "agent-a", nodeA, sa, nil)
	agentA := tokenClient(t, ns, sa, podA)
	agentB := tokenClient(t, ns, sa, createPod(t, ns, "agent-b", nodeB, sa, nil))
	unbound := tokenClient(t, ns, sa, nil)

	// The API server loads a policy a moment after it is written: until
	// agent A is refused node B.
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := labelNode(ctx, agentA, nodeB)
		if err != nil && ctx.Err() != nil {
			return false, nil // the poll's own end, not an answer
		}
		last = err
		return last != nil && strings.Contains(last.Error(), ownNodeMessage), nil
	})
	if err != nil {
		t.Fatalf("agent A was never refused node B by the policy: %v (last answer: %v)", err, last)
	}

	victims := createNamespace(t, "own-victims")
	onA := createPod(t, victims, "on-a", nodeA, "", nil)
	onB := createPod(t, victims, "on-b", nodeB, "", map[string]string{"app": "guarded"})
	if err := env.WaitPodsReady(ctx, victims, "", 2); err != nil {
		t.Fatal(err)
	}

	t.Run("own node", func(t *testing.T) {
		if err := labelNode(ctx, agentA, nodeA); err != nil {
			t.Errorf("agent A patching node A: %v", err)
		}
		if err := labelNode(ctx, agentB, nodeB); err != nil {
			t.Errorf("agent B patching node B: %v", err)
		}
		if err := setServing(ctx, agentA, victims, onA.Name); err != nil {
			t.Errorf("agent A setting the status of a pod on node A: %v", err)
		}
		if err := nodeEvent(ctx, agentA, nodeA, nodeA); err != nil {
			t.Errorf("agent A recording an Event about node A: %v", err)
		}
	})
	t.Run("another node", func(t *testing.T) {
		refused(t, "agent A patching node B", labelNode(ctx, agentA, nodeB), ownNodeMessage)
		refused(t, "agent B patching node A", labelNode(ctx, agentB, nodeA), ownNodeMessage)
		refused(t, "agent A setting the status of a pod on node B", setServing(ctx, agentA, victims, onB.Name), ownPodsMessage)
		refused(t, "agent A deleting a pod on node B", agentA.CoreV1().Pods(victims).Delete(ctx, onB.Name, metav1.DeleteOptions{}), ownPodsMessage)
		refused(t, "agent A recording an Event about node B", nodeEvent(ctx, agentA, nodeB, nodeA), ownEventsMessage)
		refused(t, "agent A recording an Event about node A as from node B", nodeEvent(ctx, agentA, nodeA, nodeB), ownEventsMessage)
	})
	t.Run("token bound to no pod", func(t *testing.T) {
		refused(t, "an unbound token patching node A", labelNode(ctx, unbound, nodeA), boundMessage)
		refused(t, "an unbound token deleting a pod on node A", unbound.CoreV1().Pods(victims).Delete(ctx, onA.Name, metav1.DeleteOptions{}), boundMessage)
	})
	t.Run("own pod deleted", func(t *testing.T) {
		if err := agentA.CoreV1().Pods(victims).Delete(ctx, onA.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("agent A deleting a pod on node A: %v", err)
		}
		// Gone before node A's drain, which would count it.
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := env.Client.CoreV1().Pods(victims).Get(ctx, onA.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("the pod agent A deleted is still there: %v", err)
		}
	})
	t.Run("eviction elsewhere still meets the budget", func(t *testing.T) {
		guardPod(ctx, t, victims, "app=guarded")
		err := agentA.PolicyV1().Evictions(victims).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: onB.Name, Namespace: victims}})
		if !apierrors.IsTooManyRequests(err) {
			t.Errorf("agent A evicting a pod on node B guarded by a budget: %v, want 429 (the budget refuses it; the policy cannot see the pod's node)", err)
		}
	})
	t.Run("drain of its own node", func(t *testing.T) {
		podNS := createNamespace(t, "own-drain")
		createPod(t, podNS, "held", nodeA, "", map[string]string{"app": "rbac", "held": "yes"})
		createPod(t, podNS, "p1", nodeA, "", map[string]string{"app": "rbac"})
		createPod(t, podNS, "p2", nodeA, "", map[string]string{"app": "rbac"})
		if err := env.WaitPodsReady(ctx, podNS, "app=rbac", 3); err != nil {
			t.Fatal(err)
		}
		guardPod(ctx, t, podNS, "held=yes")
		// The budget refuses the held pod until only its grace period (1 s)
		// and the margin (5 s) are left of the 12 s window: then it is
		// deleted despite it.
		drainAs(t, agentA, ns, drainWith{node: nodeA, podNS: podNS, host: nodeA, window: 12 * time.Second, evicted: 3, overridden: 1,
			self: types.NamespacedName{Namespace: ns, Name: podA.Name}})
		want := map[string]string{"p1": "Evicted", "p2": "Evicted", "held": "DisruptionBudgetOverridden"}
		var got map[string]string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			evs, err := env.Client.CoreV1().Events(podNS).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			got = map[string]string{}
			for _, e := range evs.Items {
				if e.Source.Host == nodeA && want[e.InvolvedObject.Name] == e.Reason {
					got[e.InvolvedObject.Name] = e.Reason
				}
			}
			return len(got) == len(want), nil
		})
		if err != nil {
			t.Errorf("pod Events recorded under agent A's token: %v, want %v", got, want)
		}
	})
}

// guardPod creates a PodDisruptionBudget of ns, minAvailable 1, over the
// one pod selector selects, and waits until kube-controller-manager has
// computed that it allows no disruption.
func guardPod(ctx context.Context, t *testing.T, ns, selector string) {
	t.Helper()
	sel, err := metav1.ParseToLabelSelector(selector)
	if err != nil {
		t.Fatal(err)
	}
	one := intstr.FromInt32(1)
	_, err = env.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "guard"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: sel},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		b, err := env.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "guard", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return b.Status.ObservedGeneration == b.Generation && b.Status.CurrentHealthy == 1 && b.Status.DisruptionsAllowed == 0, nil
	})
	if err != nil {
		t.Fatalf("the budget over %s in %s was never computed: %v", selector, ns, err)
	}
}

// TestRespectGrantsNoDelete: under pdbDeadlinePolicy respect nothing is
// ever deleted, so neither component's ClusterRole grants deleting pods,
// in the rendered rules and on the API server.
func TestRespectGrantsNoDelete(t *testing.T) {
	for _, mode := range []string{"agent", "queue"} {
		t.Run(mode, func(t *testing.T) {
			ns := createNamespace(t, "lastcall-respect-"+mode)
			values := map[string]any{"mode": mode, "pdbDeadlinePolicy": "respect"}
			if mode == "queue" {
				values["queue"] = map[string]any{"url": queueURL}
			}
			for _, o := range render(t, "respect-"+mode, ns, values) {
				if o.GetKind() != "ClusterRole" {
					continue
				}
				rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
				for _, r := range rules {
					rule, _ := r.(map[string]any)
					resources, _, _ := unstructured.NestedStringSlice(rule, "resources")
					verbs, _, _ := unstructured.NestedStringSlice(rule, "verbs")
					if slices.Contains(resources, "pods") && (slices.Contains(verbs, "delete") || slices.Contains(verbs, "*")) {
						t.Errorf("ClusterRole %s grants %v on %v under respect", o.GetName(), verbs, resources)
					}
				}
			}
			for component, c := range installRBAC(t, "respect-"+mode, ns, values) {
				if a := (access{"delete", "", "pods", "", "default"}); allowed(t, c, a) {
					t.Errorf("the %s's ServiceAccount may %s under respect", component, a)
				}
				if a := (access{"create", "", "pods", "eviction", "default"}); component != "drainability" && !allowed(t, c, a) {
					t.Errorf("the %s's ServiceAccount may not %s under respect", component, a)
				}
			}
		})
	}
}
