package podrun

import (
	"math"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestPreStopSleep(t *testing.T) {
	exec := func(cmd ...string) *corev1.LifecycleHandler {
		return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: cmd}}
	}
	for _, tc := range []struct {
		name    string
		hook    *corev1.LifecycleHandler
		want    time.Duration
		ok, err bool
	}{
		{"none", nil, 0, false, false},
		{"sleep action", &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}, 3 * time.Second, true, false},
		{"exec sleep", exec("sleep", "2"), 2 * time.Second, true, false},
		{"exec /bin/sleep fraction", exec("/bin/sleep", "0.5"), 500 * time.Millisecond, true, false},
		{"sh -c sleep", exec("sh", "-c", "sleep 4"), 4 * time.Second, true, false},
		{"/bin/sh -c sleep", exec("/bin/sh", "-c", "sleep 1"), time.Second, true, false},
		{"sh -c other", exec("sh", "-c", "nginx -s quit"), 0, false, true},
		{"exec other", exec("nginx", "-s", "quit"), 0, false, true},
		{"sleep infinity", exec("sleep", "infinity"), time.Duration(math.MaxInt64), true, false},
		{"sleep no number", exec("sleep", "1m"), 0, false, true},
		{"http hook", &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/quit"}}, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}}}
			if tc.hook != nil {
				pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: tc.hook}
			}
			got, ok, err := preStopSleep(pod)
			if got != tc.want || ok != tc.ok || (err != nil) != tc.err {
				t.Errorf("preStopSleep = %s, %v, %v; want %s, %v, error %v", got, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
}

func TestAddressesNeverRepeat(t *testing.T) {
	a := &allocator{loopback: addresses.loopback, pod: addresses.pod}
	seen := map[string]bool{}
	for range 300 {
		lo, pod, err := a.next()
		if err != nil {
			t.Fatal(err)
		}
		if seen[lo.String()] || seen[pod.String()] {
			t.Fatalf("%s or %s given twice", lo, pod)
		}
		seen[lo.String()], seen[pod.String()] = true, true
		if !a.loopback.Contains(lo) || !a.pod.Contains(pod) || lo.As4()[3] != pod.As4()[3] {
			t.Fatalf("%s, %s: outside %s, %s or not the same index", lo, pod, a.loopback, a.pod)
		}
	}
}
