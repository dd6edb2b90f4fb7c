package plan

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/serving"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func mkPod(name string, grace int64, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": name},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: name + "-rs", Controller: new(true)}}},
		Spec:   corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func budget(app string, allowed int32) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "shop"},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Status:     policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: allowed},
	}
}

func service(app string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "shop"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}}}
}

func reasons(p Pod) []Reason {
	var out []Reason
	for _, b := range p.Blockers {
		out = append(out, b.Reason)
	}
	return out
}

func TestBuild(t *testing.T) {
	preStop := func(p *corev1.Pod) {
		p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
	}
	bare := func(p *corev1.Pod) { p.OwnerReferences = nil }
	scratch := func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	}
	critical := func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-cluster-critical" }
	gated := func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "api"} // behind Service api, no preStop
		p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: serving.Gate}}
	}
	in := Inputs{
		Node: "n1", Now: now, Deadline: now.Add(2 * time.Minute),
		Pods: []*corev1.Pod{
			mkPod("web", 30, preStop), mkPod("api", 20), mkPod("stuck", 10), mkPod("job", 30, bare),
			mkPod("cache", 30, scratch, preStop), mkPod("batch", 300), mkPod("dns", 30, critical), mkPod("gated", 30, gated),
		},
		Budgets:  []*policyv1.PodDisruptionBudget{budget("stuck", 0), budget("web", 1), {ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "elsewhere"}}},
		Services: []*corev1.Service{service("web"), service("api")},
	}
	o := drain.DefaultOptions()
	p := Build(in, o)

	got := map[string][]Reason{}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			got[pod.Name] = reasons(pod)
		}
	}
	want := map[string][]Reason{
		"web": nil, "api": {ReasonNoPreStop}, "stuck": {ReasonPDB}, "job": {ReasonNoController},
		"cache": {ReasonEmptyDir}, "batch": {ReasonGraceTooLong},
		// Without a preStop hook but with the serving gate: it stops
		// serving before its SIGTERM.
		"gated": nil,
		// Critical pods go once the others are gone: the non-critical
		// group must be gone 30 s early so that dns keeps its grace.
		"dns": nil,
	}
	for name, w := range want {
		if !slices.Equal(got[name], w) {
			t.Errorf("%s: blockers %v, want %v", name, got[name], w)
		}
	}
	if len(p.Groups) != 2 || p.Groups[0].Name != drain.GroupNonCritical || p.Groups[1].Name != drain.GroupCritical {
		t.Fatalf("groups %+v", p.Groups)
	}
	// batch asks for 300 s and would have 85: the plan does not fit.
	if p.Fits || len(p.Problems) != 1 {
		t.Errorf("fits %v, problems %q; want one (batch's grace)", p.Fits, p.Problems)
	}
	if want := now.Add(85 * time.Second); !p.Groups[0].End.Equal(want) || !p.Groups[1].End.Equal(now.Add(115*time.Second)) {
		t.Errorf("group ends +%v, +%v; want +1m25s, +1m55s", p.Groups[0].End.Sub(now), p.Groups[1].End.Sub(now))
	}
	// The critical group starts once batch is cut short.
	if !p.Groups[1].Start.Equal(now.Add(85 * time.Second)) {
		t.Errorf("critical group starts at +%v, want +1m25s", p.Groups[1].Start.Sub(now))
	}
	for _, pod := range p.Groups[0].Pods {
		switch pod.Name {
		case "batch":
			if time.Duration(pod.Clamped) != 85*time.Second {
				t.Errorf("batch clamped to %v, want 1m25s", pod.Clamped)
			}
		case "stuck":
			if pod.OverrideAt == nil || !pod.OverrideAt.Equal(now.Add(75*time.Second)) {
				t.Errorf("stuck overridden at %v, want +1m15s", pod.OverrideAt)
			}
		}
	}
	if len(p.Budgets) != 1 || p.Budgets[0].Name != "stuck" || !slices.Equal(p.Budgets[0].Pods, []string{"stuck"}) {
		t.Errorf("blocking budgets %+v, want stuck", p.Budgets)
	}
	c := p.Counts()
	if len(c) != len(Reasons) || c[ReasonPDB] != 1 || c[ReasonNoPreStop] != 1 || c[ReasonGraceTooLong] != 1 {
		t.Errorf("counts %v", c)
	}

	// Under respect the budget is a problem too; without batch and the
	// budget, the plan fits.
	o.Policy = drain.PolicyRespect
	if p := Build(in, o); p.Fits || len(p.Problems) != 2 {
		t.Errorf("respect: fits %v, problems %q; want two", p.Fits, p.Problems)
	}
	in.Pods = in.Pods[:2]
	if p := Build(in, o); !p.Fits || len(p.Problems) != 0 || !p.Finish.Equal(now.Add(30*time.Second)) {
		t.Errorf("clean node: fits %v, finish +%v, problems %q", p.Fits, p.Finish.Sub(now), p.Problems)
	}

	// Durations are seconds in JSON.
	b, err := json.Marshal(Build(in, o))
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Margin float64 `json:"marginSeconds"`
		Groups []struct {
			Pods []struct {
				Grace float64 `json:"graceSeconds"`
			} `json:"pods"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(b, &back); err != nil || back.Margin != 5 || back.Groups[0].Pods[0].Grace == 0 {
		t.Errorf("JSON %s: %v", b, err)
	}
}

// A Ready pod that is the only ready endpoint of a Service is flagged; the
// pods of a Service whose every ready endpoint is on the node go one at a
// time, unless --keep-services-serving is off, when they are flagged too.
func TestServicesLeftWithoutEndpoints(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	ready := func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}}
	}
	app := func(a string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Labels = map[string]string{"app": a} }
	}
	elsewhere := map[string]int{"solo": 0, "trio": 0, "spread": 2}
	in := Inputs{
		Node: "n1", Now: now, Deadline: now.Add(2 * time.Minute),
		Pods: []*corev1.Pod{
			mkPod("solo-0", 30, ready, app("solo")),
			mkPod("trio-0", 30, ready, app("trio")), mkPod("trio-1", 30, ready, app("trio")), mkPod("trio-2", 30, ready, app("trio")),
			mkPod("spread-0", 30, ready, app("spread")),
		},
		Services:       []*corev1.Service{service("solo"), service("trio"), service("spread")},
		ReadyElsewhere: func(s *corev1.Service) int { return elsewhere[s.Name] },
	}
	for _, keep := range []bool{true, false} {
		o := drain.DefaultOptions()
		o.KeepServicesServing = keep
		p := Build(in, o)
		flagged := map[string]bool{}
		for _, g := range p.Groups {
			for _, pod := range g.Pods {
				if slices.Contains(reasons(pod), ReasonOnlyEndpoint) {
					flagged[pod.Name] = true
				}
			}
		}
		want := map[string]bool{"solo-0": true}
		wantOne := []string{"shop/trio"}
		if !keep {
			want = map[string]bool{"solo-0": true, "trio-0": true, "trio-1": true, "trio-2": true}
			wantOne = []string{}
		}
		if !maps.Equal(flagged, want) || !slices.Equal(p.OneAtATime, wantOne) {
			t.Errorf("keep-services-serving=%v: flagged %v, one at a time %v; want %v, %v", keep, flagged, p.OneAtATime, want, wantOne)
		}
	}
}

// A pod annotated lastcall.io/skip-eviction is left on the node: the plan
// lists it as skipped, by that rule, and none of what would block its
// eviction counts (here a grace period past the deadline and a budget
// allowing no disruption).
func TestAnnotatedPodIsLeftOut(t *testing.T) {
	keep := func(p *corev1.Pod) { p.Annotations = map[string]string{drain.AnnotationSkipEviction: "true"} }
	in := Inputs{
		Node: "n1", Now: now, Deadline: now.Add(2 * time.Minute),
		Pods:    []*corev1.Pod{mkPod("train", 600, keep), mkPod("stuck", 10, keep)},
		Budgets: []*policyv1.PodDisruptionBudget{budget("stuck", 0)},
	}
	p := Build(in, drain.DefaultOptions())
	if len(p.Groups) != 0 {
		t.Errorf("groups %+v, want none: nothing is evicted", p.Groups)
	}
	want := []Skipped{{Namespace: "shop", Name: "stuck", Rule: drain.RuleAnnotated}, {Namespace: "shop", Name: "train", Rule: drain.RuleAnnotated}}
	if !slices.Equal(p.Skipped, want) {
		t.Errorf("skipped %+v, want %+v", p.Skipped, want)
	}
	for reason, n := range p.Counts() {
		if n != 0 {
			t.Errorf("%d pods blocked by %s, want none", n, reason)
		}
	}
	if !p.Fits || len(p.Problems) != 0 {
		t.Errorf("fits %v, problems %q; want a plan that fits", p.Fits, p.Problems)
	}
}

func TestNodeBlockers(t *testing.T) {
	ready := func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	lb := func(name, app string, policy corev1.ServiceExternalTrafficPolicy, annotations map[string]string) *corev1.Service {
		s := service(app)
		s.Name, s.Annotations = name, annotations
		s.Spec.Type, s.Spec.ExternalTrafficPolicy = corev1.ServiceTypeLoadBalancer, policy
		return s
	}
	cluster, local := corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal
	in := Inputs{Node: "n", Now: now, Deadline: now.Add(2 * time.Minute), Pods: []*corev1.Pod{mkPod("web", 10, ready)},
		LoadBalancers: []*corev1.Service{
			lb("any", "other", cluster, nil),
			lb("web-local", "web", local, nil),
			lb("other-local", "other", local, nil),
			lb("pods", "other", cluster, map[string]string{awsTargetType: "ip"}),
			service("clusterip"),
		}}
	var got []string
	for _, b := range Build(in, drain.DefaultOptions()).NodeBlockers {
		if b.Reason != ReasonLBNoDelay {
			t.Errorf("reason %s, want %s", b.Reason, ReasonLBNoDelay)
		}
		got = append(got, b.Detail)
	}
	if len(got) != 2 || !strings.Contains(got[0], "shop/any ") || !strings.Contains(got[1], "shop/web-local ") {
		t.Errorf("node blockers %q, want shop/any and shop/web-local", got)
	}
	o := drain.DefaultOptions()
	o.LBDelay = 5 * time.Second
	if b := Build(in, o).NodeBlockers; len(b) != 0 {
		t.Errorf("with a delay: %+v, want none", b)
	}
}
