package node

import (
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMergePatch(t *testing.T) {
	base := func() *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: "42",
				Labels:      map[string]string{"keep": "1", "gone": "x"},
				Annotations: map[string]string{"a": "1"}},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "other", Effect: corev1.TaintEffectNoSchedule}}},
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Node)
		want   string
	}{{
		name:   "nothing changed still carries the resourceVersion",
		mutate: func(*corev1.Node) {},
		want:   `{"metadata":{"resourceVersion":"42"}}`,
	}, {
		name: "hold: label added, cordon, taint appended",
		mutate: func(n *corev1.Node) {
			n.Labels[LabelExcludeLB] = "true"
			n.Spec.Unschedulable = true
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "lastcall.io/spot", Value: "abc", Effect: corev1.TaintEffectNoSchedule})
		},
		want: `{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":"true"},"resourceVersion":"42"},` +
			`"spec":{"taints":[{"effect":"NoSchedule","key":"other"},{"effect":"NoSchedule","key":"lastcall.io/spot","value":"abc"}],"unschedulable":true}}`,
	}, {
		name: "release: label and annotation removed, last taint removed",
		mutate: func(n *corev1.Node) {
			delete(n.Labels, "gone")
			delete(n.Annotations, "a")
			n.Spec.Taints = nil
		},
		want: `{"metadata":{"annotations":{"a":null},"labels":{"gone":null},"resourceVersion":"42"},"spec":{"taints":null}}`,
	}, {
		name:   "uncordon is written as false, not left out",
		mutate: func(n *corev1.Node) { n.Spec.Unschedulable = false },
		want:   `{"metadata":{"resourceVersion":"42"}}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			before := base()
			after := before.DeepCopy()
			tc.mutate(after)
			got, err := mergePatch(before, after)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(w, g) {
				t.Errorf("patch = %s\nwant    %s", got, tc.want)
			}
		})
	}

	t.Run("uncordon of a cordoned node", func(t *testing.T) {
		before := base()
		before.Spec.Unschedulable = true
		after := before.DeepCopy()
		after.Spec.Unschedulable = false
		got, err := mergePatch(before, after)
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"metadata":{"resourceVersion":"42"},"spec":{"unschedulable":false}}`; string(got) != want {
			t.Errorf("patch = %s, want %s", got, want)
		}
	})
}
