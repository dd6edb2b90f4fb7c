package drain

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func pod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func TestClampGrace(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := func(s int64) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
	}
	for _, tc := range []struct {
		name     string
		pod      *corev1.Pod
		deadline time.Time
		margin   time.Duration
		want     *int64 // nil: the pod's own grace fits
	}{
		{"no deadline", pod("a", grace(300)), time.Time{}, 5 * time.Second, nil},
		{"fits", pod("a", grace(30)), now.Add(2 * time.Minute), 5 * time.Second, nil},
		{"exactly fits", pod("a", grace(25)), now.Add(30 * time.Second), 5 * time.Second, nil},
		{"300s under a 30s deadline", pod("a", grace(300)), now.Add(30 * time.Second), 5 * time.Second, new(int64(25))},
		{"default 30s under 20s", pod("a"), now.Add(20 * time.Second), 5 * time.Second, new(int64(15))},
		{"fraction rounds down", pod("a", grace(60)), now.Add(10*time.Second + 900*time.Millisecond), 0, new(int64(10))},
		{"deadline passed: at least 1s", pod("a", grace(30)), now.Add(-time.Second), 5 * time.Second, new(int64(1))},
		{"own grace 0 stays", pod("a", grace(0)), now.Add(10 * time.Second), 5 * time.Second, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ClampGrace(tc.pod, now, tc.deadline, tc.margin)
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("got %d, want the pod's own grace", *got)
			case tc.want != nil && (got == nil || *got != *tc.want):
				t.Fatalf("got %v, want %d", got, *tc.want)
			}
			if got != nil && !tc.deadline.IsZero() && tc.deadline.After(now.Add(tc.margin+time.Second)) {
				if end := now.Add(time.Duration(*got) * time.Second); end.After(tc.deadline.Add(-tc.margin)) {
					t.Fatalf("grace %ds ends at %s, after deadline-margin %s", *got, end, tc.deadline.Add(-tc.margin))
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	self := types.NamespacedName{Namespace: "ns", Name: "lastcall-x"}
	ctrl := true
	for _, tc := range []struct {
		pod     *corev1.Pod
		verdict Verdict
		rule    string
	}{
		{pod("plain"), Evict, ""},
		{pod("mirror", func(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"} }), Skip, "mirror"},
		{pod("lastcall-x"), Skip, "self"},
		{pod("kept", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSkipEviction: "true"} }), Skip, RuleAnnotated},
		{pod("kept-ds", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationSkipEviction: "true"}
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "d", Controller: &ctrl}}
		}), Skip, RuleAnnotated},
		{pod("not-kept", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSkipEviction: "false"} }), Evict, ""},
		{pod("ds", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", APIVersion: appsv1.SchemeGroupVersion.String(), Name: "d", Controller: &ctrl}}
		}), Skip, "daemonset"},
		{pod("rs", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "r", Controller: &ctrl}}
		}), Evict, ""},
		{pod("done", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), Skip, "completed"},
		{pod("failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), Skip, "completed"},
		{pod("going", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), WaitOnly, "terminating"},
	} {
		v, rule := Classify(tc.pod, self)
		if v != tc.verdict || rule != tc.rule {
			t.Errorf("%s: got (%v, %q), want (%v, %q)", tc.pod.Name, v, rule, tc.verdict, tc.rule)
		}
	}
}

func TestGroupByPriority(t *testing.T) {
	critical := func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-node-critical" }
	high := func(p *corev1.Pod) { p.Spec.Priority = new(int32(systemCriticalPriority)) }
	groups := groupByPriority([]*corev1.Pod{pod("c1", critical), pod("n1"), pod("c2", high), pod("n2")})
	if len(groups) != 2 {
		t.Fatalf("got %d groups, want 2", len(groups))
	}
	names := func(g []*corev1.Pod) (s []string) {
		for _, p := range g {
			s = append(s, p.Name)
		}
		return s
	}
	if got := names(groups[0]); len(got) != 2 || got[0] != "n1" || got[1] != "n2" {
		t.Errorf("first group %v, want the non-critical [n1 n2]", got)
	}
	if got := names(groups[1]); len(got) != 2 || got[0] != "c1" || got[1] != "c2" {
		t.Errorf("second group %v, want the critical [c1 c2]", got)
	}
	if g := groupByPriority([]*corev1.Pod{pod("c", critical)}); len(g) != 1 || g[0][0].Name != "c" {
		t.Errorf("only critical pods: got %v groups", len(g))
	}
}

func TestStatusCode(t *testing.T) {
	if got := statusCode(nil); got != "201" {
		t.Errorf("nil: got %s", got)
	}
	if got := statusCode(errString("dial tcp: refused")); got != "error" {
		t.Errorf("transport error: got %s", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestDeadline(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ notice, want time.Time }{
		{now.Add(time.Minute), now.Add(time.Minute)},      // the notice's own
		{time.Time{}, now.Add(2 * time.Minute)},           // none: the fallback
		{now.Add(-time.Second), now.Add(2 * time.Minute)}, // passed: the fallback
	} {
		if got := Deadline(tc.notice, now, 2*time.Minute); !got.Equal(tc.want) {
			t.Errorf("Deadline(%v) = %v, want %v", tc.notice, got, tc.want)
		}
	}
}
