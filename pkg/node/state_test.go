package node

import (
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStateOf(t *testing.T) {
	withState := func(raw string, taints ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{AnnotationState: raw}}}
		for _, k := range taints {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
		}
		return n
	}
	for _, tc := range []struct {
		name       string
		node       *corev1.Node
		unreadable bool
		tainted    []string
	}{
		{"none", &corev1.Node{}, false, nil},
		{"garbage", withState("not json"), true, nil},
		{"cut short", withState(`{"holds":[{"id":"a"`), true, nil},
		{"a newer lastcall's", withState(`{"version":3,"holds":[]}`), true, nil},
		{"this version's", withState(`{"version":2,"holds":[{"id":"a","kind":"spot-interruption"}],"tainted":["lastcall.io/spot-interruption"]}`,
			"lastcall.io/spot-interruption"), false, []string{"lastcall.io/spot-interruption"}},
		{"before versions: a held kind's taint was lastcall's", withState(`{"holds":[{"id":"a","kind":"spot-interruption"}],"cordoned":true}`,
			"lastcall.io/spot-interruption", "other/taint"), false, []string{"lastcall.io/spot-interruption"}},
		{"before versions: no taint found, none claimed", withState(`{"holds":[{"id":"a","kind":"spot-interruption"}]}`), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := StateOf(tc.node)
			if got := errors.Is(err, ErrUnreadable); got != tc.unreadable {
				t.Fatalf("err %v, want unreadable %v", err, tc.unreadable)
			}
			if !tc.unreadable && err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Tainted, tc.tainted) {
				t.Errorf("tainted %v, want %v", s.Tainted, tc.tainted)
			}
		})
	}
}
