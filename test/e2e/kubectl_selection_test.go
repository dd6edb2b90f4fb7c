package e2e

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/kubectlplugin"
)

// lastcall's pod selection held against kubectl's own drain filters
// (k8s.io/kubectl/pkg/drain, as `kubectl drain --ignore-daemonsets
// --delete-emptydir-data` runs them), pod by pod, on a node of the real
// API server: they agree but where the README says they differ, and why.
func TestPodSelectionHeldAgainstKubectlDrain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ns := newNamespace(t)
	node := newNode(t, "select", map[string]string{"select": ns})
	on := map[string]string{"kubernetes.io/hostname": node}

	// A Deployment's pod, and one with emptyDir data.
	create(t, deployment(ns, "managed", 1, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	scratch := deployment(ns, "scratch", 1, on, 30)
	scratch.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	create(t, scratch, env.Client.AppsV1().Deployments(ns).Create)
	// A DaemonSet's pod, on this node only.
	create(t, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
		Template: podTemplate(map[string]string{"app": "agent"}, map[string]string{"select": ns}, 30)}},
		env.Client.AppsV1().DaemonSets(ns).Create)
	// A bare pod, a mirror pod; and lastcall's own, one annotated to stay
	// and one terminating (held by a finalizer), each with a controller
	// (a ConfigMap, which no controller acts for, stands in: kubectl asks
	// only that there be one).
	owner := create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns}}, env.Client.CoreV1().ConfigMaps(ns).Create)
	owned := func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, Controller: new(true)}}
	}
	bare := func(name string, mutate ...func(*corev1.Pod)) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
			Spec: podTemplate(nil, nil, 30).Spec}
		p.Spec.NodeName = node
		for _, m := range mutate {
			m(p)
		}
		create(t, p, env.Client.CoreV1().Pods(ns).Create)
	}
	bare("bare")
	bare("lastcall", owned)
	bare("annotated", owned, func(p *corev1.Pod) { p.Annotations = map[string]string{drain.AnnotationSkipEviction: "true"} })
	bare("static", func(p *corev1.Pod) {
		p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "static"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node, UID: nodeUID(t, node), Controller: new(true)}}
	})
	bare("terminating", owned, func(p *corev1.Pod) { p.Finalizers = []string{"lastcall.io/test-hold"} })
	t.Cleanup(func() {
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		_, _ = env.Client.CoreV1().Pods(ns).Patch(context.Background(), "terminating", types.MergePatchType, patch, metav1.PatchOptions{})
	})
	// A finished pod of a Job (suspended, so it makes none of its own):
	// kwok completes the pods Jobs own.
	job := create(t, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: ns}, Spec: batchv1.JobSpec{Suspend: new(true),
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "batch"}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "registry.example/batch:1"}}}}}},
		env.Client.BatchV1().Jobs(ns).Create)
	bare("finished", func(p *corev1.Pod) {
		p.Labels = map[string]string{"run": "finished"} // not the Job's selector: it leaves the pod be
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID}}
	})

	waitPods(t, ns, func(pods []*corev1.Pod) bool {
		phase := map[string]corev1.PodPhase{}
		for _, p := range pods {
			phase[p.Labels["app"]+p.Labels["run"]] = p.Status.Phase
		}
		return len(pods) == 9 && phase["finished"] == corev1.PodSucceeded && phase["managed"] == corev1.PodRunning &&
			phase["scratch"] == corev1.PodRunning && phase["agent"] == corev1.PodRunning
	})
	if err := env.Client.CoreV1().Pods(ns).Delete(ctx, "terminating", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(t, ns, func(pods []*corev1.Pod) bool {
		for _, p := range pods {
			if p.Name == "terminating" {
				return p.DeletionTimestamp != nil
			}
		}
		return false
	})

	kubectl, refused, err := kubectlplugin.KubectlVerdicts(ctx, env.Client, node)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What each does with each pod, and where they differ, why.
	want := map[string]struct{ lastcall, kubectl string }{
		"managed":     {"evict", "evict"},
		"scratch":     {"evict", "evict"},
		"agent":       {"skip (daemonset)", "ignore: ignoring DaemonSet-managed Pods"},
		"static":      {"skip (mirror)", "skip"},
		"bare":        {"evict", "refuse: Pods that declare no controller (use --force to override)"}, // the node is going: lastcall evicts, plan flags no-controller
		"finished":    {"skip (completed)", "evict"},                                                  // nothing left to stop: lastcall leaves the record
		"annotated":   {"skip (annotated)", "evict"},                                                  // lastcall.io/skip-eviction
		"lastcall":    {"skip (self)", "evict"},                                                       // lastcall's own pod
		"terminating": {"wait (terminating)", "evict"},                                                // lastcall waits; kubectl evicts again
	}
	self := types.NamespacedName{Namespace: ns, Name: "lastcall"}
	seen := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		name := p.Labels["app"] + p.Labels["run"]
		if name == "terminating" || p.Name == "terminating" {
			name = "terminating"
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected pod %s", p.Name)
			continue
		}
		seen++
		v, rule := drain.Classify(p, self)
		got := map[drain.Verdict]string{drain.Evict: "evict", drain.Skip: "skip", drain.WaitOnly: "wait"}[v]
		if rule != "" {
			got += fmt.Sprintf(" (%s)", rule)
		}
		k := kubectl[ns+"/"+p.Name]
		if k == "" {
			k = kubectlplugin.KubectlSkip
		}
		if got != w.lastcall || k != w.kubectl {
			t.Errorf("pod %s: lastcall %q, kubectl drain %q; want %q, %q", p.Name, got, k, w.lastcall, w.kubectl)
		}
	}
	if seen != len(want) {
		t.Errorf("%d pods compared, want %d", seen, len(want))
	}
	if len(refused) != 1 || refused[0] != "cannot delete Pods that declare no controller (use --force to override): "+ns+"/bare" {
		t.Errorf("kubectl drain refuses %q, want the bare pod only", refused)
	}
}

// nodeUID is the UID of node.
func nodeUID(t *testing.T, node string) types.UID {
	t.Helper()
	n, err := env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.UID
}
