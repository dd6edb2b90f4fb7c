package chart_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/kubemetrics"
	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/test/chart"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/tools"
)

var env *cluster.Cluster

func TestMain(m *testing.M) {
	kubemetrics.Install()
	os.Exit(cluster.Main(m, &env))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func chartDir(t *testing.T) string {
	t.Helper()
	dir, err := chart.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func render(t *testing.T, release, ns string, values map[string]any) []*unstructured.Unstructured {
	t.Helper()
	out, err := chart.Template(testContext(t), release, ns, values)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := chart.Documents(out)
	if err != nil {
		t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
	}
	return objs
}

const queueURL = "https://sqs.eu-west-1.amazonaws.com/123456789012/lastcall"

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
	}{
		{"agent defaults", nil},
		{"queue", []string{"--set", "mode=queue", "--set", "queue.url=" + queueURL}},
		{"everything on", []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
			"--set", "prometheusRule.enabled=true", "--set", "dashboard.enabled=true", "--set", "servingGate.enabled=true",
			"--set", "notifications.webhook.existingSecret=hook", "--set-json", `notifications.template="{\"text\": \"${summary}\"}"`}},
		{"agent on Windows nodes too", []string{"--set", "agent.windows.enabled=true", "--set", "agent.windows.image.tag=" + windowsTag}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := chart.Helm(testContext(t), append([]string{"lint", "--strict", chartDir(t)}, tc.set...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !bytes.Contains(out, []byte("0 chart(s) failed")) {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
		})
	}
}

// matrix is the sets of values every rendering check runs over.
var matrix = []struct {
	name   string
	values map[string]any
}{
	{"agent defaults", nil},
	{"agent on a hop-limit-1 AWS fleet", map[string]any{
		"agent": map[string]any{"cloud": "aws", "hostNetwork": true, "clouds": map[string]any{"aws": map[string]any{
			"rebalance-action": "drain", "imds-signals": []string{"spot", "rebalance"}, "imds-allow-v1": true,
			"imds-endpoint": "http://169.254.169.254"}}},
		"logFormat": "text", "logLevel": "debug", "dryRun": true, "clusterName": "prod-eu",
		"notifications": map[string]any{"webhook": map[string]any{"existingSecret": "lastcall-teams", "format": "teams"}},
	}},
	{"agent on Azure with every monitoring object and a webhook", map[string]any{
		"agent": map[string]any{"cloud": "azure", "clouds": map[string]any{"azure": map[string]any{
			"azure-acknowledge": true, "azure-drain-freeze": true}}},
		"metrics":        map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "podMonitor": map[string]any{"enabled": true}},
		"prometheusRule": map[string]any{"enabled": true, "alertLabels": map[string]any{"team": "platform"}},
		"dashboard":      map[string]any{"enabled": true},
		"notifications": map[string]any{"webhook": map[string]any{"existingSecret": "lastcall-webhook"},
			"template": `{"text": "${summary}", "node": "${node}"}`},
		"image": map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)},
	}},
	{"agent on GCE without a Service, respecting budgets, evicting DaemonSets", map[string]any{
		"agent": map[string]any{"cloud": "gce", "clouds": map[string]any{"gce": map[string]any{"gce-preemption-deadline": "25s"},
			// Set to null, a default flag is left out.
			"aws": map[string]any{"asg-termination-deadline": nil}}},
		"drainability": map[string]any{"priorityClassName": "system-cluster-critical", "podLabels": map[string]any{"team": "platform"},
			"tolerations": []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}}},
		"metrics":           map[string]any{"service": map[string]any{"enabled": false}, "port": 9500},
		"pdbDeadlinePolicy": "respect", "lbDeregistrationDelay": "15s", "evictDaemonSets": true,
	}},
	{"agent without the drainability process", map[string]any{"drainability": map[string]any{"enabled": false}}},
	{"agent with the serving gate in namespaces chosen by expression", map[string]any{"servingGate": map[string]any{"enabled": true,
		"namespaceSelector": map[string]any{"matchLabels": nil, "matchExpressions": []any{
			map[string]any{"key": "team", "operator": "In", "values": []string{"web", "api"}}}}}}},
	{"agent with existing ServiceAccounts and no RBAC", map[string]any{
		"serviceAccount": map[string]any{"create": false, "name": "lastcall-agent"},
		"drainability":   map[string]any{"serviceAccountName": "lastcall-drainability"},
		"rbac":           map[string]any{"create": false},
		"extraArgs":      []string{"--source-stale-after=2m"},
	}},
	{"queue defaults", map[string]any{"mode": "queue", "queue": map[string]any{"url": queueURL}}},
	{"queue with IRSA, a managed tag and no PDB", map[string]any{
		"mode": "queue",
		"queue": map[string]any{"url": queueURL, "replicas": 3, "managedTag": "cluster=prod", "region": "eu-west-1",
			"lifecycleFailureResult": "ABANDON", "podDisruptionBudget": map[string]any{"enabled": false}},
		"serviceAccount": map[string]any{"annotations": map[string]any{"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lastcall"}},
		"metrics":        map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
		"prometheusRule": map[string]any{"enabled": true},
	}},
	{"queue with an existing ServiceAccount", map[string]any{
		"mode": "queue", "queue": map[string]any{"url": queueURL},
		"serviceAccount": map[string]any{"create": false, "name": "lastcall-existing"},
	}},
}

func TestTemplateMatrix(t *testing.T) {
	for i, tc := range matrix {
		t.Run(tc.name, func(t *testing.T) {
			ns := fmt.Sprintf("lastcall-%d", i)
			objs := render(t, "lc", ns, tc.values)
			mode := "agent"
			if m, ok := tc.values["mode"]; ok {
				mode = m.(string)
			}
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.GetKind()]++
				if o.GetNamespace() != "" && o.GetNamespace() != ns {
					t.Errorf("%s %s is in namespace %q, not the release's %q", o.GetKind(), o.GetName(), o.GetNamespace(), ns)
				}
			}
			// The components and the kind of workload each one is.
			want := map[string]string{"queue": "Deployment"}
			if mode == "agent" {
				want = map[string]string{"agent": "DaemonSet"}
				if enabled, ok := nested(tc.values, "drainability", "enabled").(bool); !ok || enabled {
					want["drainability"] = "Deployment"
				}
			}
			workloads := map[string]*unstructured.Unstructured{}
			for _, o := range objs {
				if o.GetKind() != "DaemonSet" && o.GetKind() != "Deployment" {
					continue
				}
				c := o.GetLabels()["app.kubernetes.io/component"]
				if want[c] != o.GetKind() || workloads[c] != nil {
					t.Fatalf("mode %s rendered %s %s of component %q; want one each of %v", mode, o.GetKind(), o.GetName(), c, want)
				}
				workloads[c] = o
			}
			if len(workloads) != len(want) {
				t.Fatalf("mode %s rendered the components %v; want %v", mode, slices.Sorted(maps.Keys(workloads)), want)
			}
			if got := kinds["Role"] == 1 && kinds["RoleBinding"] == 1; got != (mode == "queue") {
				t.Errorf("lease Role and RoleBinding rendered: %v, want %v (queue mode only)", got, mode == "queue")
			}
			pdbWanted := mode == "queue" && tc.name != "queue with IRSA, a managed tag and no PDB"
			if got := kinds["PodDisruptionBudget"] == 1; got != pdbWanted {
				t.Errorf("PodDisruptionBudget rendered: %v, want %v", got, pdbWanted)
			}
			gate, _ := nested(tc.values, "servingGate", "enabled").(bool)
			if got := kinds["MutatingAdmissionPolicy"] == 1 && kinds["MutatingAdmissionPolicyBinding"] == 1; got != gate ||
				kinds["MutatingAdmissionPolicy"] != kinds["MutatingAdmissionPolicyBinding"] {
				t.Errorf("serving gate policy and binding rendered: %d and %d, want one each only with servingGate.enabled (%v)",
					kinds["MutatingAdmissionPolicy"], kinds["MutatingAdmissionPolicyBinding"], gate)
			}
			checkServiceAccounts(t, objs, workloads)
			for c, w := range workloads {
				t.Run(c, func(t *testing.T) {
					checkPodSpec(t, w, c)
					checkScraped(t, objs, w)
					checkArgs(t, objs, w, c, tc.values, app.Providers())
				})
			}
		})
	}
}

// nested returns the value at path in values, or nil.
func nested(values map[string]any, path ...string) any {
	var v any = values
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// podLabels returns the labels of a workload's pods.
func podLabels(w *unstructured.Unstructured) map[string]string {
	l, _, _ := unstructured.NestedStringMap(w.Object, "spec", "template", "metadata", "labels")
	return l
}

// checkServiceAccounts checks that each component runs under a
// ServiceAccount of its own, which the chart binds to a ClusterRole of its
// own when it creates RBAC.
func checkServiceAccounts(t *testing.T, objs []*unstructured.Unstructured, workloads map[string]*unstructured.Unstructured) {
	t.Helper()
	created, bound := map[string]bool{}, map[string]string{}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount":
			created[o.GetName()] = true
		case "ClusterRoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			role, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
			for _, s := range subjects {
				name, _, _ := unstructured.NestedString(s.(map[string]any), "name")
				if prev, dup := bound[name]; dup {
					t.Errorf("ServiceAccount %s is bound to ClusterRoles %s and %s", name, prev, role)
				}
				bound[name] = role
			}
		}
	}
	rbac := len(bound) > 0
	roles := map[string]string{}
	for c, w := range workloads {
		sa, _, _ := unstructured.NestedString(w.Object, "spec", "template", "spec", "serviceAccountName")
		if other, dup := roles[sa]; dup || sa == "" {
			t.Errorf("%s runs under ServiceAccount %q, as %s does", c, sa, other)
		}
		roles[sa] = c
		if len(created) > 0 && !created[sa] {
			t.Errorf("%s runs under ServiceAccount %q, which the chart does not create (it creates %v)", c, sa, slices.Sorted(maps.Keys(created)))
		}
		if rbac && bound[sa] == "" {
			t.Errorf("%s's ServiceAccount %s is bound to no ClusterRole", c, sa)
		}
	}
}

// checkScraped checks that the metrics Service and the Prometheus Operator
// monitors, when rendered, select the workload's pods.
func checkScraped(t *testing.T, objs []*unstructured.Unstructured, w *unstructured.Unstructured) {
	t.Helper()
	labels := podLabels(w)
	for kind, path := range map[string][]string{
		"Service":        {"spec", "selector"},
		"PodMonitor":     {"spec", "selector", "matchLabels"},
		"ServiceMonitor": {"spec", "selector", "matchLabels"},
	} {
		o := chart.Find(objs, kind)
		if o == nil {
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(o.Object, path...)
		if len(sel) == 0 {
			t.Errorf("%s %s selects nothing", kind, o.GetName())
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s %s selects %s=%s; %s %s's pods have %q", kind, o.GetName(), k, v, w.GetKind(), w.GetName(), labels[k])
			}
		}
	}
}

// checkPodSpec checks the hardening every component must have.
func checkPodSpec(t *testing.T, w *unstructured.Unstructured, component string) {
	t.Helper()
	pod := &corev1.PodTemplateSpec{}
	tmpl, _, _ := unstructured.NestedMap(w.Object, "spec", "template")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, pod); err != nil {
		t.Fatal(err)
	}
	ps := pod.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Error("pod does not require a non-root user")
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(ps.Containers))
	}
	sc := ps.Containers[0].SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem is not read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation is not disabled")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities: %+v, want all dropped and none added", sc.Capabilities)
	}
	c := ps.Containers[0]
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatal("probes are not /healthz and /readyz")
	}
	// The probe must outwait the agent's loop, to read why it failed.
	if timeout := time.Duration(c.LivenessProbe.TimeoutSeconds) * time.Second; timeout <= app.LivenessPingBound {
		t.Errorf("liveness probe timeout %s: not above the %s the agent's loop has to answer a ping", timeout, app.LivenessPingBound)
	}
	if component == "agent" {
		if ps.PriorityClassName != "system-node-critical" {
			t.Errorf("agent priorityClassName %q, want system-node-critical", ps.PriorityClassName)
		}
		if !slices.ContainsFunc(ps.Tolerations, func(tl corev1.Toleration) bool {
			return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
		}) {
			t.Errorf("agent tolerations %+v do not tolerate every taint", ps.Tolerations)
		}
		return
	}
	if ps.HostNetwork {
		t.Errorf("the %s runs in the host network", component)
	}
	if len(c.VolumeMounts) > 0 && component == "drainability" {
		t.Errorf("the drainability process mounts %+v; it sends no notifications", c.VolumeMounts)
	}
}

// checkArgs parses the container's arguments and environment exactly as
// lastcall would, with the given clouds, so a chart value that renders a
// flag lastcall does not know, or a value it rejects, fails here.
func checkArgs(t *testing.T, objs []*unstructured.Unstructured, w *unstructured.Unstructured, component string, values map[string]any,
	providers []provider.Provider) (*app.Options, *pflag.FlagSet) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(w.Object, "spec", "template", "spec", "containers")
	c := &corev1.Container{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(containers[0].(map[string]any), c); err != nil {
		t.Fatal(err)
	}
	envs := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.Value != "":
			envs[e.Name] = e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			envs[e.Name] = map[string]string{"spec.nodeName": "node-1", "metadata.name": "lastcall-x", "metadata.namespace": "lastcall"}[e.ValueFrom.FieldRef.FieldPath]
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			envs[e.Name] = "https://hooks.example.com/services/T0/B0/x"
		}
		if strings.HasPrefix(e.Name, flagenv.EnvPrefix) && envs[e.Name] == "" {
			t.Errorf("env %s has no value or downward-API field", e.Name)
		}
	}
	args := slices.Clone(c.Args)
	// The template file is a mounted ConfigMap: check the rendered one.
	for _, cm := range objs {
		if cm.GetKind() != "ConfigMap" {
			continue
		}
		if tmpl, ok, _ := unstructured.NestedString(cm.Object, "data", "webhook.tmpl"); ok {
			f := filepath.Join(t.TempDir(), "webhook.tmpl")
			if err := os.WriteFile(f, []byte(tmpl), 0o644); err != nil {
				t.Fatal(err)
			}
			for i, a := range args {
				if strings.HasPrefix(a, "--webhook-template-file=") {
					args[i] = "--webhook-template-file=" + f
				}
			}
		}
	}
	o := app.NewOptions(providers...)
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	o.AddFlags(fs)
	lookup := func(k string) (string, bool) { v, ok := envs[k]; return v, ok }
	if err := flagenv.Parse(fs, args, lookup); err != nil {
		t.Fatalf("lastcall rejects the rendered arguments %q: %v", args, err)
	}
	for name := range envs {
		if strings.HasPrefix(name, flagenv.EnvPrefix) && !envIsFlag(fs, name) {
			t.Errorf("env %s matches no lastcall flag", name)
		}
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("lastcall rejects the rendered configuration %q: %v", args, err)
	}
	if o.Mode != component {
		t.Errorf("--mode %s, want %s", o.Mode, component)
	}
	cloud := "auto"
	if v, ok := nested(values, "agent", "cloud").(string); ok {
		cloud = v
	}
	if component != "queue" && o.Agent.Cloud != cloud {
		t.Errorf("--cloud %s, want agent.cloud %s", o.Agent.Cloud, cloud)
	}
	switch component {
	case "agent":
		if o.Agent.NodeName != "node-1" {
			t.Errorf("node name %q does not come from spec.nodeName", o.Agent.NodeName)
		}
		// Each cloud flag set in the values is passed as its value, and one
		// set to null is left out.
		clouds, _ := nested(values, "agent", "clouds").(map[string]any)
		for cloud, flags := range clouds {
			for name, v := range flags.(map[string]any) {
				f := fs.Lookup(name)
				if f == nil {
					t.Errorf("agent.clouds.%s.%s: lastcall has no --%s", cloud, name, name)
					continue
				}
				if want := cloudArg(name, v); want == "" {
					if f.Changed {
						t.Errorf("agent.clouds.%s.%s is null, and --%s was passed: %q", cloud, name, name, args)
					}
				} else if !slices.Contains(args, want) {
					t.Errorf("agent.clouds.%s.%s: %q not in the arguments %q", cloud, name, want, args)
				}
			}
		}
	case "drainability":
		// It sends no notifications, so it is given no webhook.
		if o.Notify.URL != "" || o.Notify.TemplateFile != "" {
			t.Errorf("the drainability process is given a webhook (URL set: %v, template %q)", o.Notify.URL != "", o.Notify.TemplateFile)
		}
	}
	// The drain's values reach its options, defaults included.
	policy, lbDelay, daemonSets := "graceful-override", "0s", false
	if v, ok := values["pdbDeadlinePolicy"].(string); ok {
		policy = v
	}
	if v, ok := values["lbDeregistrationDelay"].(string); ok {
		lbDelay = v
	}
	if v, ok := values["evictDaemonSets"].(bool); ok {
		daemonSets = v
	}
	if string(o.Drain.Policy) != policy || o.Drain.LBDelay.String() != lbDelay || o.Drain.EvictDaemonSets != daemonSets {
		t.Errorf("drain options: policy %s, LB delay %s, evict DaemonSets %v; want %s, %s, %v",
			o.Drain.Policy, o.Drain.LBDelay, o.Drain.EvictDaemonSets, policy, lbDelay, daemonSets)
	}
	return o, fs
}

// cloudArg is the argument agent.clouds.<cloud>.<name>: v renders, as the
// values document it; "" for null.
func cloudArg(name string, v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case []string:
		return "--" + name + "=" + strings.Join(v, ",")
	default:
		return fmt.Sprintf("--%s=%v", name, v)
	}
}

func envIsFlag(fs *pflag.FlagSet, env string) bool {
	found := false
	fs.VisitAll(func(f *pflag.Flag) { found = found || flagenv.EnvName(f.Name) == env })
	return found
}

func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string // in helm's error
	}{
		{"unknown mode", map[string]any{"mode": "sidecar"}, []string{"/mode", "agent", "queue"}},
		{"queue without a URL", map[string]any{"mode": "queue"}, []string{"/queue/url"}},
		{"queue URL not a URL", map[string]any{"mode": "queue", "queue": map[string]any{"url": "my-queue"}}, []string{"/queue/url"}},
		{"misspelt top-level key", map[string]any{"mdoe": "queue"}, []string{"mdoe"}},
		{"misspelt nested key", map[string]any{"agent": map[string]any{"pollIntervall": "1s"}}, []string{"pollIntervall"}},
		{"cloud not a name", map[string]any{"agent": map[string]any{"cloud": "AWS"}}, []string{"/agent/cloud"}},
		{"duration without unit", map[string]any{"agent": map[string]any{"pollInterval": "500"}}, []string{"/agent/pollInterval"}},
		{"unknown IMDS signal", cloudFlags("aws", "imds-signals", []string{"spot", "reboot"}), []string{"/agent/clouds/aws/imds-signals/1"}},
		{"unknown rebalance action", cloudFlags("aws", "rebalance-action", "terminate"), []string{"/agent/clouds/aws/rebalance-action", "cordon", "drain"}},
		{"AWS flag of the old values", cloudFlags("aws", "imdsSignals", []string{"spot"}), []string{"/agent/clouds/aws", "imdsSignals"}},
		{"GCE deadline without unit", cloudFlags("gce", "gce-preemption-deadline", "30"), []string{"/agent/clouds/gce/gce-preemption-deadline"}},
		{"Azure flag on GCE", cloudFlags("gce", "azure-acknowledge", true), []string{"/agent/clouds/gce", "azure-acknowledge"}},
		{"another cloud's flag not a flag name", cloudFlags("example", "--example-deadline", "1m"), []string{"/agent/clouds/example", "--example-deadline"}},
		{"another cloud's flag an object", cloudFlags("example", "example-deadline", map[string]any{"value": "1m"}), []string{"/agent/clouds/example/example-deadline"}},
		{"existing agent ServiceAccount without the drainability one", map[string]any{"serviceAccount": map[string]any{"create": false, "name": "lastcall"}},
			[]string{"drainability.serviceAccountName"}},
		{"drainability in replicas", map[string]any{"drainability": map[string]any{"replicas": 2}}, []string{"/drainability", "replicas"}},
		{"no eviction concurrency", map[string]any{"evictionConcurrency": 0}, []string{"/evictionConcurrency"}},
		{"zero client QPS", map[string]any{"kubeApiQPS": 0}, []string{"/kubeApiQPS"}},
		{"lowercase lifecycle result", map[string]any{"mode": "queue", "queue": map[string]any{"url": queueURL, "lifecycleFailureResult": "continue"}}, []string{"/queue/lifecycleFailureResult"}},
		{"ratio above 1", map[string]any{"prometheusRule": map[string]any{"deadlineUsedRatio": 1.5}}, []string{"/prometheusRule/deadlineUsedRatio"}},
		{"bad pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, []string{"/image/pullPolicy"}},
		{"port out of range", map[string]any{"metrics": map[string]any{"port": 70000}}, []string{"/metrics/port"}},
		{"probe period zero", map[string]any{"probes": map[string]any{"liveness": map[string]any{"periodSeconds": 0}}}, []string{"/probes/liveness/periodSeconds"}},
		{"probe timeout a duration", map[string]any{"probes": map[string]any{"readiness": map[string]any{"timeoutSeconds": "5s"}}}, []string{"/probes/readiness/timeoutSeconds"}},
		{"probe setting the chart does not take", map[string]any{"probes": map[string]any{"liveness": map[string]any{"initialDelaySeconds": 30}}}, []string{"/probes/liveness", "initialDelaySeconds"}},
		{"extra arg not a flag", map[string]any{"extraArgs": []string{"dry-run"}}, []string{"/extraArgs/0"}},
		{"unknown PDB deadline policy", map[string]any{"pdbDeadlinePolicy": "override"}, []string{"/pdbDeadlinePolicy", "graceful-override", "respect"}},
		{"LB delay without unit", map[string]any{"lbDeregistrationDelay": "15"}, []string{"/lbDeregistrationDelay"}},
		{"serving gate selector with an unknown operator", map[string]any{"servingGate": map[string]any{"namespaceSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": "team", "operator": "Equals", "values": []string{"web"}}}}}},
			[]string{"/servingGate/namespaceSelector/matchExpressions/0/operator"}},
		{"serving gate selector of pods", map[string]any{"servingGate": map[string]any{"podSelector": map[string]any{}}}, []string{"/servingGate", "podSelector"}},
		{"unknown webhook format", map[string]any{"notifications": map[string]any{"webhook": map[string]any{"format": "discord"}}},
			[]string{"/notifications/webhook/format", "slack", "teams", "json"}},
		{"Windows agent without a Windows image", map[string]any{"agent": map[string]any{"windows": map[string]any{"enabled": true}}},
			[]string{"/agent/windows/image"}},
		{"Windows agent given a Linux security context", map[string]any{"agent": map[string]any{"windows": map[string]any{
			"securityContext": map[string]any{"runAsUser": 65532}}}}, []string{"/agent/windows", "securityContext"}},
		{"Windows agent without an account", map[string]any{"agent": map[string]any{"windows": map[string]any{"runAsUserName": ""}}},
			[]string{"/agent/windows/runAsUserName"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := chart.Template(testContext(t), "lc", "lastcall", tc.values)
			if err == nil {
				t.Fatal("helm template accepted the values")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
		})
	}
}

// cloudFlags are values setting one flag of one cloud.
func cloudFlags(cloud, flag string, v any) map[string]any {
	return map[string]any{"agent": map[string]any{"clouds": map[string]any{cloud: map[string]any{flag: v}}}}
}

// TestSchemaKnowsEachCloudsFlags checks that the schema's flags of each
// cloud it knows are the flags that cloud's provider declares, so a value
// the schema accepts is a flag of that cloud, and a flag a provider adds
// can be set. A cloud the schema does not know (a provider added since)
// takes any flag name.
func TestSchemaKnowsEachCloudsFlags(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir(t), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Agent struct {
				Properties struct {
					Clouds struct {
						Properties map[string]struct {
							AdditionalProperties *bool                     `json:"additionalProperties"`
							Properties           map[string]map[string]any `json:"properties"`
						} `json:"properties"`
					} `json:"clouds"`
				} `json:"properties"`
			} `json:"agent"`
		} `json:"properties"`
	}
	if err := yaml.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	known := schema.Properties.Agent.Properties.Clouds.Properties
	providers := map[string]provider.Provider{}
	for _, p := range app.Providers() {
		providers[p.Name()] = p
	}
	for cloud, s := range known {
		p := providers[cloud]
		if p == nil {
			t.Errorf("the schema knows cloud %s, which lastcall does not", cloud)
			continue
		}
		if s.AdditionalProperties == nil || *s.AdditionalProperties {
			t.Errorf("the schema of cloud %s allows other flags than its own", cloud)
		}
		fs := pflag.NewFlagSet(cloud, pflag.ContinueOnError)
		p.AddFlags(fs)
		var flags []string
		fs.VisitAll(func(f *pflag.Flag) { flags = append(flags, f.Name) })
		if got := slices.Sorted(maps.Keys(s.Properties)); !slices.Equal(got, flags) {
			t.Errorf("the schema of cloud %s knows the flags %v; its provider declares %v", cloud, got, flags)
		}
	}
	if len(known) < 3 {
		t.Errorf("the schema knows %d clouds, want aws, gce and azure at least", len(known))
	}
}

// exampleCloud is a cloud lastcall does not ship, with a flag of each kind
// the chart renders.
type exampleCloud struct {
	deadline time.Duration
	signals  []string
	ack      bool
	retries  int
}

func (*exampleCloud) Name() string { return "example" }

func (c *exampleCloud) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&c.deadline, "example-deadline", 0, "")
	fs.StringSliceVar(&c.signals, "example-signals", nil, "")
	fs.BoolVar(&c.ack, "example-acknowledge", false, "")
	fs.IntVar(&c.retries, "example-retries", 0, "")
}

func (*exampleCloud) Validate() error              { return nil }
func (*exampleCloud) Detect(context.Context) error { return errors.New("not here") }
func (*exampleCloud) NoticeWindow() time.Duration  { return time.Minute }
func (*exampleCloud) Sources(context.Context, provider.Env) ([]interruption.Source, error) {
	return nil, nil
}

// TestChartTakesANewCloud renders the chart for a cloud it was not written
// for, with nothing but values: the agent and the drainability process
// render arguments that lastcall, with that cloud registered, parses into
// the cloud's own options.
func TestChartTakesANewCloud(t *testing.T) {
	values := map[string]any{"agent": map[string]any{"cloud": "example", "clouds": map[string]any{"example": map[string]any{
		"example-deadline": "45s", "example-signals": []string{"a", "b"}, "example-acknowledge": true, "example-retries": 1000000,
	}}}}
	objs := render(t, "lc", "lastcall", values)
	for _, kind := range []string{"DaemonSet", "Deployment"} {
		w := chart.Find(objs, kind)
		if w == nil {
			t.Fatalf("no %s rendered", kind)
		}
		component := w.GetLabels()["app.kubernetes.io/component"]
		c := &exampleCloud{}
		o, _ := checkArgs(t, objs, w, component, values, append(app.Providers(), c))
		if o.Agent.Cloud != "example" {
			t.Errorf("%s: --cloud %s, want example", component, o.Agent.Cloud)
		}
		if component != "agent" {
			continue
		}
		if c.deadline != 45*time.Second || !slices.Equal(c.signals, []string{"a", "b"}) || !c.ack || c.retries != 1000000 {
			t.Errorf("the new cloud's options: %+v, want 45s, [a b], true, 1000000", *c)
		}
	}
}

// installCRDs creates the Prometheus Operator's CRDs from its Go module,
// once per test binary.
func installCRDs(t *testing.T) {
	t.Helper()
	ctx := testContext(t)
	dir, err := tools.ModuleSourceDir(ctx, tools.PrometheusOperator, tools.PrometheusOperatorModule)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(env.Config)
	crds := dyn.Resource(crdResource)
	for _, name := range []string{"servicemonitors", "podmonitors", "prometheusrules"} {
		b, err := os.ReadFile(filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := chart.Documents(b)
		if err != nil || len(objs) != 1 {
			t.Fatalf("CRD %s: %v (%d documents)", name, err, len(objs))
		}
		if _, err := crds.Apply(ctx, objs[0].GetName(), objs[0], metav1.ApplyOptions{FieldManager: "lastcall-test", Force: true}); err != nil {
			t.Fatalf("installing CRD %s: %v", objs[0].GetName(), err)
		}
	}
	// Wait until the API serves them.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := env.Client.Discovery().ServerResourcesForGroupVersion("monitoring.coreos.com/v1")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("monitoring.coreos.com/v1 not served: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var crdResource = schemaGVR("apiextensions.k8s.io", "v1", "customresourcedefinitions")

func TestServerSideDryRun(t *testing.T) {
	installCRDs(t)
	ctx := testContext(t)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	for i, tc := range matrix {
		t.Run(tc.name, func(t *testing.T) {
			ns := createNamespace(t, fmt.Sprintf("lastcall-dry-%d", i))
			objs := render(t, fmt.Sprintf("dry%d", i), ns, tc.values)
			for _, o := range objs {
				if err := applyDryRun(ctx, mapper, dyn, ns, o); err != nil {
					t.Errorf("%s %s rejected by the API server: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

func createNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns, err := env.CreateNamespace(testContext(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := env.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("deleting namespace %s: %v", ns, err)
		}
	})
	return ns
}

func TestDeployManifestsUpToDate(t *testing.T) {
	files, err := chart.Manifests(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(root, "deploy", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("deploy/%s is not what the chart renders (run make manifests): %v", name, err)
		}
	}
	if len(files) < 5 {
		t.Errorf("only %d manifests rendered", len(files))
	}
}

func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; make tools installs it): %v", err)
	}
	rules, err := chart.Rules(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	// Every alert of the chart has a unit test.
	var file struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if !bytes.Contains(tests, []byte("alertname: "+r.Alert)) {
				t.Errorf("alert %s has no promtool unit test", r.Alert)
			}
		}
	}
}

// TestChartDefaultsMatchTheBinary: a duration flag the chart always passes
// has, by default, the binary's own default, so that the README's figures,
// measured with the binary's defaults, hold for a default install.
func TestChartDefaultsMatchTheBinary(t *testing.T) {
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	app.NewOptions(app.Providers()...).AddFlags(fs)
	for _, mode := range []string{"agent", "queue"} {
		values := map[string]any{"mode": mode}
		if mode == "queue" {
			values["queue"] = map[string]any{"url": queueURL}
		}
		for _, o := range render(t, "defaults", "defaults", values) {
			if o.GetKind() != "DaemonSet" && o.GetKind() != "Deployment" {
				continue
			}
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			c, _ := containers[0].(map[string]any)
			args, _, _ := unstructured.NestedStringSlice(c, "args")
			for _, a := range args {
				name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				f := fs.Lookup(name)
				if !ok || f == nil || f.Value.Type() != "duration" {
					continue
				}
				want, _ := time.ParseDuration(f.DefValue)
				got, err := time.ParseDuration(value)
				if err != nil || got != want {
					t.Errorf("%s %s: the chart passes --%s=%s by default; the binary's default is %s", o.GetKind(), o.GetName(), name, value, f.DefValue)
				}
			}
		}
	}
}

// TestDeployManifestsApplySideBySide: deploy/agent.yaml and
// deploy/queue.yaml share no object, so applying both changes neither's:
// not a ServiceAccount (the queue's IAM role would reach every agent), a
// ClusterRole, nor the metrics Service (its selector would flip).
func TestDeployManifestsApplySideBySide(t *testing.T) {
	files, err := chart.Manifests(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	}
	agent, err := chart.Documents(files["agent.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	queue, err := chart.Documents(files["queue.yaml"])
	if err != nil {
		t.Fatal(err)
	}
	inAgent := map[string]bool{}
	for _, o := range agent {
		inAgent[key(o)] = true
	}
	for _, o := range queue {
		if inAgent[key(o)] {
			t.Errorf("deploy/agent.yaml and deploy/queue.yaml both hold %s", key(o))
		}
	}
	// Both files are valid for the real API server, in the namespace of
	// deploy/namespace.yaml.
	_, err = env.Client.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "lastcall"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	for _, o := range append(agent, queue...) {
		if err := applyDryRun(testContext(t), mapper, dyn, "lastcall", o); err != nil {
			t.Errorf("applying %s: %v", key(o), err)
		}
	}
}

// TestEveryAlertHasARunbook: each alert's runbook_url points at its own
// section of docs/runbooks.md, which says what happened, what to check and
// what to do.
func TestEveryAlertHasARunbook(t *testing.T) {
	rules, err := chart.Rules(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert       string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	for _, s := range strings.Split(string(doc), "\n## ")[1:] {
		title, body, _ := strings.Cut(s, "\n")
		sections[strings.TrimSpace(title)] = body
	}
	alerts := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			want := "https://github.com/lastcall/lastcall/blob/main/docs/runbooks.md#" + strings.ToLower(r.Alert)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
			}
			body, ok := sections[r.Alert]
			if !ok {
				t.Errorf("%s: no section in docs/runbooks.md", r.Alert)
				continue
			}
			for _, part := range []string{"**What happened.**", "**What to check.**", "**What to do.**"} {
				if !strings.Contains(body, part) {
					t.Errorf("%s: its runbook lacks %s", r.Alert, part)
				}
			}
		}
	}
	if alerts == 0 {
		t.Fatal("the chart rendered no alert")
	}
}

// The chart's README is what helm-docs writes from values.yaml: a value
// added or changed without `make chart-docs` fails here.
func TestChartREADMEIsGenerated(t *testing.T) {
	want, err := chart.README(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, chart.READMEPath))
	if err != nil {
		t.Fatalf("%v: run make chart-docs", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what helm-docs writes from values.yaml: run make chart-docs\n%s", chart.READMEPath, firstDiff(string(got), string(want)))
	}
	for _, row := range strings.Split(string(want), "\n") {
		if cells := strings.Split(row, " | "); strings.HasPrefix(row, "| ") && len(cells) == 4 && strings.TrimSpace(strings.TrimSuffix(cells[3], "|")) == "" {
			t.Errorf("value without a description (a `# --` comment above it in values.yaml): %s", row)
		}
	}
}

// firstDiff names the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n have %q\n want %q", i+1, gl, wl)
		}
	}
	return ""
}
