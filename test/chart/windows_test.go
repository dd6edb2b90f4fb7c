package chart_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/klog/v2"

	"github.com/lastcall/lastcall/pkg/app"
)

const windowsTag = "0.1.0-windows-ltsc2022"

// windowsValues turns the Windows agent on, over values.
func windowsValues(values map[string]any) map[string]any {
	out := maps.Clone(values)
	if out == nil {
		out = map[string]any{}
	}
	agent, _ := out["agent"].(map[string]any)
	agent = maps.Clone(agent)
	if agent == nil {
		agent = map[string]any{}
	}
	agent["windows"] = map[string]any{"enabled": true, "image": map[string]any{"tag": windowsTag}}
	out["agent"] = agent
	return out
}

// TestWindowsAgent renders the Windows DaemonSet, checks it is a
// HostProcess pod for Windows nodes running the Linux agent's arguments and
// environment, and has the API server validate it as a Windows pod.
func TestWindowsAgent(t *testing.T) {
	ctx := testContext(t)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	for i, tc := range []struct {
		name   string
		values map[string]any
	}{
		{"defaults", nil},
		{"on AWS, with a webhook template, metrics auth and the pod's IP", map[string]any{
			"agent": map[string]any{"cloud": "aws", "clouds": map[string]any{"aws": map[string]any{"rebalance-action": "drain"}}},
			"notifications": map[string]any{"webhook": map[string]any{"existingSecret": "lastcall-webhook"},
				"template": `{"text": "${summary}"}`},
			"metrics":   map[string]any{"auth": map[string]any{"enabled": true}, "bindPodIP": true},
			"extraArgs": []string{"--source-stale-after=2m"},
			"extraEnv":  []any{map[string]any{"name": "LASTCALL_LOG_LEVEL", "value": "debug"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := createNamespace(t, fmt.Sprintf("lastcall-win-%d", i))
			values := windowsValues(tc.values)
			objs := render(t, "win", ns, values)
			var linux, windows *unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() != "DaemonSet" {
					continue
				}
				switch c := o.GetLabels()["app.kubernetes.io/component"]; c {
				case "agent":
					linux = o
				case "agent-windows":
					windows = o
				default:
					t.Fatalf("DaemonSet %s of component %q", o.GetName(), c)
				}
			}
			if linux == nil || windows == nil {
				t.Fatalf("want the Linux and the Windows DaemonSets; got Linux %v, Windows %v", linux != nil, windows != nil)
			}
			lpod, wpod := podTemplate(t, linux), podTemplate(t, windows)
			checkWindowsPod(t, wpod)
			if got := lpod.Spec.NodeSelector["kubernetes.io/os"]; got != "linux" || lpod.Spec.OS != nil {
				t.Errorf("Linux DaemonSet: node selector kubernetes.io/os=%q, os %v; want linux and no os", got, lpod.Spec.OS)
			}
			// Neither DaemonSet's selector matches the other's pods.
			for _, p := range []struct{ ds, pods *unstructured.Unstructured }{{linux, windows}, {windows, linux}} {
				if sel := selector(t, p.ds); sel.Matches(labels.Set(podLabels(p.pods))) {
					t.Errorf("DaemonSet %s's selector %s matches the pods of %s", p.ds.GetName(), sel, p.pods.GetName())
				}
			}
			// The Linux agent's arguments, environment, probes and resources,
			// under its ServiceAccount.
			lc, wc := lpod.Spec.Containers[0], wpod.Spec.Containers[0]
			if !slices.Equal(wc.Args, lc.Args) {
				t.Errorf("Windows arguments %q, want the Linux agent's %q", wc.Args, lc.Args)
			}
			if !slices.EqualFunc(wc.Env, lc.Env, func(a, b corev1.EnvVar) bool { return a.String() == b.String() }) {
				t.Errorf("Windows environment %v, want the Linux agent's %v", wc.Env, lc.Env)
			}
			if wc.LivenessProbe.String() != lc.LivenessProbe.String() || wc.ReadinessProbe.String() != lc.ReadinessProbe.String() ||
				!slices.Equal(wc.Ports, lc.Ports) || wc.Resources.String() != lc.Resources.String() {
				t.Errorf("Windows probes, ports or resources differ from the Linux agent's:\n%v\n%v", wc, lc)
			}
			if wpod.Spec.ServiceAccountName != lpod.Spec.ServiceAccountName {
				t.Errorf("Windows ServiceAccount %q, want the Linux agent's %q", wpod.Spec.ServiceAccountName, lpod.Spec.ServiceAccountName)
			}
			if !strings.HasSuffix(wc.Image, ":"+windowsTag) || wc.Image == lc.Image {
				t.Errorf("Windows image %q, want tag %s (the Linux image is %s)", wc.Image, windowsTag, lc.Image)
			}
			// lastcall parses them: --mode=agent, the node from spec.nodeName.
			o, _ := checkArgs(t, objs, windows, "agent", values, app.Providers())
			if o.Agent.NodeName != "node-1" {
				t.Errorf("node name %q does not come from spec.nodeName", o.Agent.NodeName)
			}
			if !slices.Contains(wc.Args, "--mode=agent") {
				t.Errorf("arguments %q lack --mode=agent", wc.Args)
			}
			checkScraped(t, objs, windows)
			// The API server validates every object, the Windows pod by the
			// rules of spec.os.name windows.
			for _, o := range objs {
				if err := applyDryRun(ctx, mapper, dyn, ns, o); err != nil {
					t.Errorf("%s %s rejected by the API server: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

// checkWindowsPod checks a pod template is a HostProcess pod for Windows
// nodes that sets none of the Linux-only fields.
func checkWindowsPod(t *testing.T, pod *corev1.PodTemplateSpec) {
	t.Helper()
	ps := pod.Spec
	if ps.OS == nil || ps.OS.Name != corev1.Windows {
		t.Errorf("os %v, want windows", ps.OS)
	}
	if got := ps.NodeSelector["kubernetes.io/os"]; got != "windows" {
		t.Errorf("node selector kubernetes.io/os=%q, want windows", got)
	}
	if !ps.HostNetwork {
		t.Error("not in the host network: HostProcess pods must be")
	}
	sc := ps.SecurityContext
	if sc == nil || sc.WindowsOptions == nil || sc.WindowsOptions.HostProcess == nil || !*sc.WindowsOptions.HostProcess {
		t.Fatalf("pod security context %v: not hostProcess", sc)
	}
	if u := sc.WindowsOptions.RunAsUserName; u == nil || *u != `NT AUTHORITY\Local service` {
		t.Errorf("runAsUserName %v, want NT AUTHORITY\\Local service", u)
	}
	if sc.RunAsUser != nil || sc.RunAsGroup != nil || sc.FSGroup != nil || sc.SeccompProfile != nil || sc.SELinuxOptions != nil ||
		sc.AppArmorProfile != nil || len(sc.SupplementalGroups) > 0 || len(sc.Sysctls) > 0 {
		t.Errorf("pod security context has Linux-only fields: %v", sc)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(ps.Containers))
	}
	if csc := ps.Containers[0].SecurityContext; csc != nil {
		t.Errorf("container security context %v, want none (the pod's applies)", csc)
	}
	if ps.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", ps.PriorityClassName)
	}
	taint := &corev1.Taint{Key: "os", Value: "windows", Effect: corev1.TaintEffectNoSchedule}
	if !slices.ContainsFunc(ps.Tolerations, func(tl corev1.Toleration) bool { return tl.ToleratesTaint(klog.Background(), taint, false) }) {
		t.Errorf("tolerations %v do not tolerate %v", ps.Tolerations, taint)
	}
}

// TestWindowsPodRejectsLinuxFields checks that the dry run of
// TestWindowsAgent would catch a Linux-only field on the Windows pod: the
// API server refuses each, as it refuses a HostProcess pod outside the
// host network.
func TestWindowsPodRejectsLinuxFields(t *testing.T) {
	ctx := testContext(t)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	ns := createNamespace(t, "lastcall-win-linux")
	var ds *unstructured.Unstructured
	for _, o := range render(t, "win", ns, windowsValues(nil)) {
		if o.GetKind() == "DaemonSet" && o.GetLabels()["app.kubernetes.io/component"] == "agent-windows" {
			ds = o
		}
	}
	if ds == nil {
		t.Fatal("no Windows DaemonSet rendered")
	}
	if err := applyDryRun(ctx, mapper, dyn, ns, ds); err != nil {
		t.Fatalf("the Windows DaemonSet as rendered is refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		// path under the pod's spec, or under its container's with
		// "containers" first.
		path []string
		v    any
	}{
		{"seccomp profile", []string{"securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
		{"user ID", []string{"securityContext", "runAsUser"}, int64(65532)},
		{"read-only root filesystem", []string{"containers", "securityContext", "readOnlyRootFilesystem"}, true},
		{"capabilities", []string{"containers", "securityContext", "capabilities", "drop"}, []any{"ALL"}},
		{"pod network", []string{"hostNetwork"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ds.DeepCopy()
			spec := []string{"spec", "template", "spec"}
			if tc.path[0] == "containers" {
				cs, _, _ := unstructured.NestedSlice(o.Object, append(spec, "containers")...)
				if err := unstructured.SetNestedField(cs[0].(map[string]any), tc.v, tc.path[1:]...); err != nil {
					t.Fatal(err)
				}
				if err := unstructured.SetNestedSlice(o.Object, cs, append(spec, "containers")...); err != nil {
					t.Fatal(err)
				}
			} else if err := unstructured.SetNestedField(o.Object, tc.v, append(spec, tc.path...)...); err != nil {
				t.Fatal(err)
			}
			field := tc.path[len(tc.path)-1]
			if field == "drop" || field == "type" {
				field = tc.path[len(tc.path)-2]
			}
			err := applyDryRun(ctx, mapper, dyn, ns, o)
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("the API server's answer: %v; want a refusal naming %s", err, field)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

// applyDryRun applies o in ns with a server-side dry run: the API server
// validates it as on install and keeps nothing.
func applyDryRun(ctx context.Context, mapper meta.RESTMapper, dyn dynamic.Interface, ns string, o *unstructured.Unstructured) error {
	return applyObject(ctx, mapper, dyn, ns, o, metav1.ApplyOptions{FieldManager: "lastcall-test", DryRun: []string{metav1.DryRunAll}})
}

// apply applies o in ns for real.
func apply(ctx context.Context, mapper meta.RESTMapper, dyn dynamic.Interface, ns string, o *unstructured.Unstructured) error {
	return applyObject(ctx, mapper, dyn, ns, o, metav1.ApplyOptions{FieldManager: "lastcall-test"})
}

func applyObject(ctx context.Context, mapper meta.RESTMapper, dyn dynamic.Interface, ns string, o *unstructured.Unstructured, opts metav1.ApplyOptions) error {
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("the API server does not serve it: %w", err)
	}
	var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		r = dyn.Resource(m.Resource).Namespace(ns)
	}
	_, err = r.Apply(ctx, o.GetName(), o, opts)
	return err
}

// podTemplate is a workload's pod template.
func podTemplate(t *testing.T, w *unstructured.Unstructured) *corev1.PodTemplateSpec {
	t.Helper()
	pod := &corev1.PodTemplateSpec{}
	tmpl, _, _ := unstructured.NestedMap(w.Object, "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// selector is a workload's label selector.
func selector(t *testing.T, w *unstructured.Unstructured) labels.Selector {
	t.Helper()
	ml, _, _ := unstructured.NestedStringMap(w.Object, "spec", "selector", "matchLabels")
	if len(ml) == 0 {
		t.Fatalf("%s %s selects nothing", w.GetKind(), w.GetName())
	}
	return labels.SelectorFromSet(ml)
}
