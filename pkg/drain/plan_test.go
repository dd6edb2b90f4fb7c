package drain

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func withGrace(s int64) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
}

func TestOverrideAt(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		grace    int64
		deadline time.Duration
		want     time.Duration // after start
	}{
		{"grace fits: the last moment it can shut down", 10, 2 * time.Minute, 2*time.Minute - 5*time.Second - 10*time.Second},
		{"default 30 s grace, 2 min", 30, 2 * time.Minute, 85 * time.Second},
		{"grace over half the window: half of it", 30, 30 * time.Second, 12500 * time.Millisecond},
		{"grace far beyond the window: still half", 300, 30 * time.Second, 12500 * time.Millisecond},
		{"deadline inside the margin: at once", 10, 3 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := OverrideAt(pod("p", withGrace(tc.grace)), start, start.Add(tc.deadline), 5*time.Second)
			if want := start.Add(tc.want); !got.Equal(want) {
				t.Errorf("OverrideAt = +%v, want +%v", got.Sub(start), tc.want)
			}
		})
	}
}

func TestLBDelay(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pods := []*corev1.Pod{pod("a", withGrace(30)), pod("b", withGrace(10))}
	for _, tc := range []struct {
		name       string
		configured time.Duration
		deadline   time.Duration // after start; 0: none
		want       time.Duration
	}{
		{"off", 0, 2 * time.Minute, 0},
		{"room for it", 15 * time.Second, 2 * time.Minute, 15 * time.Second},
		{"a long delay that still fits", 60 * time.Second, 2 * time.Minute, 60 * time.Second},
		{"shortened so the longest grace (30 s) still fits", 60 * time.Second, 50 * time.Second, 15 * time.Second},
		{"no room at all", 15 * time.Second, 30 * time.Second, 0},
		{"no deadline", 15 * time.Second, 0, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var deadline time.Time
			if tc.deadline > 0 {
				deadline = start.Add(tc.deadline)
			}
			got := LBDelay(tc.configured, pods, start, deadline, 5*time.Second)
			if got != tc.want {
				t.Errorf("LBDelay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSort(t *testing.T) {
	ds := func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "logs", Controller: new(true)}}
	}
	critical := func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-node-critical" }
	terminating := func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }
	pods := []*corev1.Pod{pod("web"), pod("dns", critical), pod("logs", ds), pod("old", terminating)}
	for _, tc := range []struct {
		name   string
		opts   Options
		groups []string
	}{
		{"daemonsets stay", Options{}, []string{GroupNonCritical + ":web", GroupCritical + ":dns"}},
		{"daemonsets last", Options{EvictDaemonSets: true}, []string{GroupNonCritical + ":web", GroupCritical + ":dns", GroupDaemonSet + ":logs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Sort(pods, tc.opts)
			var got []string
			for _, g := range s.Groups {
				for _, p := range g.Pods {
					got = append(got, g.Name+":"+p.Name)
				}
			}
			if len(got) != len(tc.groups) {
				t.Fatalf("groups %v, want %v", got, tc.groups)
			}
			for i := range got {
				if got[i] != tc.groups[i] {
					t.Errorf("groups %v, want %v", got, tc.groups)
				}
			}
			if len(s.Terminating) != 1 || s.Terminating[0].Name != "old" {
				t.Errorf("terminating %v, want old", s.Terminating)
			}
			if _, skipped := s.Skipped["daemonset"]; skipped == tc.opts.EvictDaemonSets {
				t.Errorf("daemonset skipped: %v with EvictDaemonSets %v", skipped, tc.opts.EvictDaemonSets)
			}
		})
	}
}

func TestBudgetOf(t *testing.T) {
	refused := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	refused.ErrStatus.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{
		Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget web needs 2 healthy pods and has 2 currently",
	}}}
	if got := budgetOf(refused); got != "PodDisruptionBudget web" {
		t.Errorf("budgetOf = %q", got)
	}
	for _, err := range []error{errors.New("x"), apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "p"),
		apierrors.NewTooManyRequests("no causes", 1)} {
		if got := budgetOf(err); got != "its PodDisruptionBudget" {
			t.Errorf("budgetOf(%v) = %q", err, got)
		}
	}
}

func TestResultSummary(t *testing.T) {
	for _, tc := range []struct {
		res  Result
		want string
	}{
		{Result{Evicted: 3}, "3 pods evicted"},
		{Result{Evicted: 4, Overridden: []string{"shop/db-0"}, Skipped: map[string]int{"daemonset": 2, "self": 1}},
			"3 pods evicted, 1 deleted past its PodDisruptionBudget (shop/db-0), left in place: 2 daemonset, 1 self"},
		{Result{Evicted: 2, Skipped: map[string]int{RuleAnnotated: 1, "daemonset": 1}, Kept: []string{"batch/train-0"}},
			"2 pods evicted, left in place: 1 annotated lastcall.io/skip-eviction (batch/train-0), 1 daemonset"},
	} {
		if got := tc.res.Summary(); got != tc.want {
			t.Errorf("Summary = %q, want %q", got, tc.want)
		}
	}
}

func TestGroupEnds(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	groups := []Group{
		{Name: GroupNonCritical, Pods: []*corev1.Pod{pod("a", withGrace(10)), pod("b", withGrace(60))}},
		{Name: GroupCritical, Pods: []*corev1.Pod{pod("dns", withGrace(30))}},
		{Name: GroupDaemonSet, Pods: []*corev1.Pod{pod("logs", withGrace(5))}},
	}
	for _, tc := range []struct {
		name     string
		deadline time.Duration
		want     []time.Duration // after start
	}{
		// 115 s window: the daemonset group gets 5 s, critical 30 s more.
		{"2 min", 2 * time.Minute, []time.Duration{80 * time.Second, 110 * time.Second, 115 * time.Second}},
		// 25 s window: reserves are capped at half of it.
		{"30 s", 30 * time.Second, []time.Duration{12500 * time.Millisecond, 20 * time.Second, 25 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := GroupEnds(groups, start, start.Add(tc.deadline), 5*time.Second)
			for i := range got {
				if want := start.Add(tc.want[i]); !got[i].Equal(want) {
					t.Errorf("group %s ends at +%v, want +%v", groups[i].Name, got[i].Sub(start), tc.want[i])
				}
			}
		})
	}
	for _, end := range GroupEnds(groups, start, time.Time{}, 5*time.Second) {
		if !end.IsZero() {
			t.Errorf("no deadline: end %v, want zero", end)
		}
	}
}
