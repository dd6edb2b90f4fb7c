package plancmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/lastcall/lastcall/pkg/plan"
	"github.com/lastcall/lastcall/test/golden"
)

// planNow is the pinned moment of every plan here.
var planNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

type podOption func(*corev1.Pod)

// testPod is a pod on node-a, labelled app=<name up to its first dash>,
// owned by a controller when kind is not empty.
func testPod(ns, name, kind string, opts ...podOption) *corev1.Pod {
	app, _, _ := strings.Cut(name, "-")
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName:   "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if kind != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: app, UID: types.UID("uid-" + app), Controller: new(true)}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func onNodeB(p *corev1.Pod) { p.Spec.NodeName = "node-b" }

func preStop(p *corev1.Pod) {
	p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
		Sleep: &corev1.SleepAction{Seconds: 5},
	}}
}

func grace(s int64) podOption {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
}

func emptyDir(name string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
}

func critical(p *corev1.Pod) { p.Spec.PriorityClassName = "system-cluster-critical" }

func testBudget(ns, app string, allowed int32) *policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app, Generation: 1},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: allowed},
	}
}

func testService(ns, app string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
}

func testNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// blockersCluster has node-a with one pod of each kind of blocker, a
// critical pod, and pods every skip rule leaves; node-b has pods and a
// budget that are none of node-a's business.
func blockersCluster() []runtime.Object {
	return []runtime.Object{
		testNode("node-a"), testNode("node-b"),
		testPod("shop", "web-7d4b9c-x2x4q", "ReplicaSet"),
		testService("shop", "web"),
		testPod("shop", "api-5f6c7d-k9z2m", "ReplicaSet", preStop),
		testBudget("shop", "api", 0),
		testPod("shop", "bare", "", preStop),
		testPod("shop", "cache-0", "StatefulSet", preStop, emptyDir("scratch")),
		testPod("shop", "slow-0", "StatefulSet", preStop, grace(300)),
		testPod("kube-system", "coredns-6b7d-p8q7r", "ReplicaSet", preStop, critical),
		testPod("shop", "logs-h4k2n", "DaemonSet"),
		testPod("kube-system", "kube-proxy-node-a", "", func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
		}),
		testPod("shop", "report-29xk1", "Job", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		testPod("shop", "web-7d4b9c-f00ba", "ReplicaSet", onNodeB),
		testPod("other", "db-0", "StatefulSet", onNodeB),
		testBudget("other", "db", 0),
	}
}

// cleanCluster has node-a with one pod that drains cleanly: a preStop
// hook behind its Service, a budget allowing a disruption.
func cleanCluster() []runtime.Object {
	return []runtime.Object{
		testNode("node-a"),
		testPod("shop", "web-7d4b9c-x2x4q", "ReplicaSet", preStop),
		testService("shop", "web"),
		testBudget("shop", "web", 1),
	}
}

// budgetCluster has node-a with one pod whose budget allows no disruption:
// it fits under graceful-override, not under respect.
func budgetCluster() []runtime.Object {
	return []runtime.Object{
		testNode("node-a"),
		testPod("shop", "api-5f6c7d-k9z2m", "ReplicaSet", preStop),
		testBudget("shop", "api", 0),
	}
}

type planRun struct {
	code           int
	stdout, stderr string
}

func runPlanCommand(t *testing.T, client *fake.Clientset, args []string, env map[string]string) planRun {
	t.Helper()
	var stdout, stderr bytes.Buffer
	penv := Env{Now: planNow}
	if client != nil {
		penv.Client = client
	}
	code := Command(context.Background(), args, penv, &stdout, &stderr,
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return planRun{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestPlanExitStatus(t *testing.T) {
	failList := func(c *fake.Clientset) {
		c.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("connection refused")
		})
	}
	failGet := func(c *fake.Clientset) {
		c.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("Unauthorized")
		})
	}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		react   func(*fake.Clientset)
		noFake  bool // no client: made from the flags
		args    []string
		env     map[string]string
		want    int
		wantOut string // in stdout
		wantErr string // in stderr
	}{
		{name: "blockers: does not fit", objs: blockersCluster(), args: []string{"--node", "node-a"}, want: 1, wantOut: "does NOT fit"},
		{name: "clean node fits", objs: cleanCluster(), args: []string{"--node=node-a"}, want: 0, wantOut: ": fits"},
		{name: "clean node fits under respect", objs: cleanCluster(), args: []string{"--node=node-a", "--pdb-deadline-policy=respect"}, want: 0},
		{name: "budget overridden in time", objs: budgetCluster(), args: []string{"--node=node-a"}, want: 0,
			wantOut: "pdb-allows-no-disruption (overridden at +1m25s)"},
		{name: "budget respected", objs: budgetCluster(), args: []string{"--node=node-a", "--pdb-deadline-policy=respect"}, want: 1,
			wantOut: "is blocked by its PodDisruptionBudget and the policy is respect"},
		{name: "policy from the environment", objs: budgetCluster(), args: []string{"--node=node-a"},
			env: map[string]string{"LASTCALL_PDB_DEADLINE_POLICY": "respect"}, want: 1},
		{name: "budget overridden later with a later deadline", objs: budgetCluster(), args: []string{"--node=node-a", "--deadline=10m"}, want: 0,
			wantOut: "Estimated finish: +9m55s of 10m0s (deadline less margin at +9m55s): fits"},
		{name: "grace longer than the deadline", objs: cleanCluster(), args: []string{"--node=node-a", "--deadline=30s"}, want: 1,
			wantOut: "grace-exceeds-deadline"},
		{name: "node missing", objs: cleanCluster(), args: []string{"--node=node-z"}, want: 2, wantErr: "node not found: node-z"},
		{name: "no node", objs: cleanCluster(), want: 2, wantErr: "--node: required"},
		{name: "bad output", objs: cleanCluster(), args: []string{"--node=node-a", "-o", "xml"}, want: 2, wantErr: `--output: must be table, wide, json, yaml; got "xml"`},
		{name: "zero deadline", objs: cleanCluster(), args: []string{"--node=node-a", "--deadline=0s"}, want: 2, wantErr: "--deadline: must be positive"},
		{name: "negative deadline", objs: cleanCluster(), args: []string{"--node=node-a", "--deadline=-1m"}, want: 2, wantErr: "--deadline: must be positive"},
		{name: "unparsable deadline", objs: cleanCluster(), args: []string{"--node=node-a", "--deadline=soon"}, want: 2, wantErr: `"--deadline"`},
		{name: "unparsable deadline from the environment", objs: cleanCluster(), args: []string{"--node=node-a"},
			env: map[string]string{"LASTCALL_DEADLINE": "soon"}, want: 2, wantErr: "$LASTCALL_DEADLINE"},
		{name: "bad policy", objs: cleanCluster(), args: []string{"--node=node-a", "--pdb-deadline-policy=never"}, want: 2, wantErr: "--pdb-deadline-policy"},
		{name: "bad margin", objs: cleanCluster(), args: []string{"--node=node-a", "--deadline-margin=-1s"}, want: 2, wantErr: "--deadline-margin: must not be negative"},
		{name: "bad LB delay", objs: cleanCluster(), args: []string{"--node=node-a", "--lb-deregistration-delay=1h"}, want: 2, wantErr: "--lb-deregistration-delay: must be between"},
		{name: "pod name without namespace", objs: cleanCluster(), args: []string{"--node=node-a", "--pod-name=lastcall-x"}, want: 2, wantErr: "--pod-name"},
		{name: "a daemon flag plan does not take", objs: cleanCluster(), args: []string{"--node=node-a", "--mode=queue"}, want: 2, wantErr: "unknown flag: --mode"},
		{name: "an argument", objs: cleanCluster(), args: []string{"--node=node-a", "now"}, want: 2, wantErr: `unexpected argument "now"`},
		{name: "help", args: []string{"--help"}, want: 0, wantOut: "Usage: lastcall plan --node NAME"},
		{name: "listing fails", objs: cleanCluster(), react: failList, args: []string{"--node=node-a"}, want: 3,
			wantErr: "listing the Services of namespace shop: connection refused"},
		{name: "reading the node fails", objs: cleanCluster(), react: failGet, args: []string{"--node=node-a"}, want: 3, wantErr: "reading node node-a: Unauthorized"},
		{name: "no kubeconfig", noFake: true, args: []string{"--node=node-a", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, want: 3,
			wantErr: "loading Kubernetes client configuration"},
		{name: "no file in $KUBECONFIG", noFake: true, args: []string{"--node=node-a"},
			env: map[string]string{"KUBECONFIG": filepath.Join(t.TempDir(), "missing")}, want: 3, wantErr: "$KUBECONFIG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var client *fake.Clientset
			if !tc.noFake {
				client = fake.NewClientset(tc.objs...)
				if tc.react != nil {
					tc.react(client)
				}
			}
			r := runPlanCommand(t, client, tc.args, tc.env)
			if r.code != tc.want || !strings.Contains(r.stdout, tc.wantOut) || !strings.Contains(r.stderr, tc.wantErr) {
				t.Fatalf("exit %d, want %d (stdout wants %q, stderr %q)\nstdout:\n%s\nstderr:\n%s", r.code, tc.want, tc.wantOut, tc.wantErr, r.stdout, r.stderr)
			}
			if tc.want >= 2 && r.stdout != "" && !slices.Contains(tc.args, "--help") {
				t.Errorf("stdout of a failed plan: %q", r.stdout)
			}
		})
	}
}

func TestPlanTableGolden(t *testing.T) {
	r := runPlanCommand(t, fake.NewClientset(blockersCluster()...), []string{"--node", "node-a", "-o", "table"}, nil)
	if r.code != ExitNoFit || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden.Check(t, filepath.Join("testdata", "plan.golden"), r.stdout)
}

func TestPlanJSON(t *testing.T) {
	r := runPlanCommand(t, fake.NewClientset(blockersCluster()...), []string{"--node", "node-a", "-o", "json"}, nil)
	if r.code != ExitNoFit {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var p plan.Plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("the JSON does not parse into a plan.Plan: %v\n%s", err, r.stdout)
	}
	if p.Node != "node-a" || !p.Now.Equal(planNow) || !p.Deadline.Equal(planNow.Add(2*time.Minute)) || p.Fits ||
		p.Margin != plan.Seconds(5*time.Second) || p.Policy != "graceful-override" {
		t.Errorf("plan header: %+v", p)
	}
	got := map[string][]plan.Reason{}
	var groups []string
	for _, g := range p.Groups {
		groups = append(groups, g.Name)
		for _, pod := range g.Pods {
			key := pod.Namespace + "/" + pod.Name
			got[key] = []plan.Reason{}
			for _, b := range pod.Blockers {
				got[key] = append(got[key], b.Reason)
			}
		}
	}
	want := map[string][]plan.Reason{
		"shop/api-5f6c7d-k9z2m": {plan.ReasonPDB},
		"shop/bare":             {plan.ReasonNoController},
		"shop/cache-0":          {plan.ReasonEmptyDir},
		"shop/slow-0":           {plan.ReasonGraceTooLong},
		"shop/web-7d4b9c-x2x4q": {plan.ReasonNoPreStop},
		// The non-critical group must be gone 30 s early, leaving coredns its grace.
		"kube-system/coredns-6b7d-p8q7r": {},
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("blockers:\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(groups, []string{"non-critical", "critical"}) {
		t.Errorf("groups %v", groups)
	}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			switch pod.Name {
			case "api-5f6c7d-k9z2m":
				if pod.OverrideAt == nil || !pod.OverrideAt.Equal(planNow.Add(55*time.Second)) {
					t.Errorf("api overridden at %v, want now+55s (its group's end, +85s, less its 30s)", pod.OverrideAt)
				}
			case "slow-0":
				if pod.Grace != plan.Seconds(300*time.Second) || pod.Clamped != plan.Seconds(85*time.Second) {
					t.Errorf("slow-0 grace %s clamped %s, want 5m0s and 1m25s", pod.Grace, pod.Clamped)
				}
			}
		}
	}
	if len(p.Budgets) != 1 || p.Budgets[0].Name != "api" || !slices.Equal(p.Budgets[0].Pods, []string{"api-5f6c7d-k9z2m"}) {
		t.Errorf("budgets %+v: want shop/api alone (other/db is node-b's)", p.Budgets)
	}
	var skipped []string
	for _, s := range p.Skipped {
		skipped = append(skipped, s.Namespace+"/"+s.Name+":"+s.Rule)
	}
	if want := []string{"kube-system/kube-proxy-node-a:mirror", "shop/logs-h4k2n:daemonset", "shop/report-29xk1:completed"}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %v, want %v", skipped, want)
	}
}

// The drain flags reach the plan with the daemon's meaning.
func TestPlanDrainFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		check func(*testing.T, plan.Plan)
	}{
		{"own pod skipped", []string{"--pod-name=bare", "--pod-namespace=shop"}, func(t *testing.T, p plan.Plan) {
			if !slices.Contains(p.Skipped, plan.Skipped{Namespace: "shop", Name: "bare", Rule: "self"}) {
				t.Errorf("skipped %v: want shop/bare as self", p.Skipped)
			}
		}},
		{"DaemonSet pods evicted last", []string{"--evict-daemonsets"}, func(t *testing.T, p plan.Plan) {
			if last := p.Groups[len(p.Groups)-1]; last.Name != "daemonset" || len(last.Pods) != 1 || last.Pods[0].Name != "logs-h4k2n" {
				t.Errorf("last group %+v", last)
			}
		}},
		{"LB delay shortened to fit the longest grace", []string{"--lb-deregistration-delay=30s", "--deadline=10m"}, func(t *testing.T, p plan.Plan) {
			if p.LBDelay != plan.Seconds(30*time.Second) || !p.Groups[0].Start.Equal(planNow.Add(30*time.Second)) {
				t.Errorf("LB delay %s, first group at %s", p.LBDelay, p.Groups[0].Start)
			}
		}},
		{"LB delay dropped when a grace does not fit", []string{"--lb-deregistration-delay=30s"}, func(t *testing.T, p plan.Plan) {
			if p.LBDelay != 0 {
				t.Errorf("LB delay %s, want 0s", p.LBDelay)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runPlanCommand(t, fake.NewClientset(blockersCluster()...), append([]string{"--node=node-a", "-o=json"}, tc.args...), nil)
			var p plan.Plan
			if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
				t.Fatalf("exit %d: %v\nstderr: %s", r.code, err, r.stderr)
			}
			tc.check(t, p)
		})
	}
}
