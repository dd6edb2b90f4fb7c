package podrun_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// TestGracePeriodArithmetic checks, on a fake clock and a fake API, the
// kubelet's timing: a preStop hook longer than the grace period is cut
// short at its end, and the server still gets 2 s after it before the kill.
func TestGracePeriodArithmetic(t *testing.T) {
	ctx, client, clock, rt := fakeRuntime(t, "app=stubborn")

	pods := client.CoreV1().Pods("default")
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "stubborn", UID: "stubborn-uid",
			Labels:      map[string]string{"app": "stubborn"},
			Annotations: map[string]string{podrun.SignalAnnotation: podrun.Ignore},
		},
		Spec: corev1.PodSpec{
			NodeName: "node",
			Containers: []corev1.Container{{Name: "main", Lifecycle: &corev1.Lifecycle{
				PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 10}},
			}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll := func(what string, cond func(context.Context) (bool, error)) {
		t.Helper()
		if err := wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, cond); err != nil {
			t.Fatalf("waiting until %s: %v", what, err)
		}
	}
	poll("Ready", func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.Conditions) > 0, err
	})
	addr, ok := rt.Addr(pod.UID)
	if !ok {
		t.Fatal("no address")
	}
	mustServe(ctx, t, addr, "stubborn")

	// The API server's part of a delete with a grace period of 5 s.
	pod, err = pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gracePeriod := int64(5)
	now := metav1.NewTime(clock.Now().Add(5 * time.Second))
	pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds = &now, &gracePeriod
	if _, err := pods.Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waiting := func(ctx context.Context) (bool, error) { return clock.HasWaiters(), nil }

	poll("the preStop hook runs", waiting)
	clock.Step(5 * time.Second) // the grace period, which cuts the 10 s hook short
	poll("the time left after the hook is counted", waiting)
	clock.Step(2*time.Second - time.Millisecond)
	mustServe(ctx, t, addr, "stubborn")
	clock.Step(time.Millisecond)

	poll("the pod is removed", func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	mustRefuse(t, addr)
}

// TestStartupDelay checks, on a fake clock, that a pod with
// StartupAnnotation is neither Running nor Ready until its application
// has started.
func TestStartupDelay(t *testing.T) {
	ctx, client, clock, _ := fakeRuntime(t, "app=slow")
	pods := client.CoreV1().Pods("default")
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "slow", UID: "slow-uid", Labels: map[string]string{"app": "slow"},
			Annotations: map[string]string{podrun.StartupAnnotation: "5s"}},
		Spec: corev1.PodSpec{NodeName: "node", Containers: []corev1.Container{{Name: "main"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		return clock.HasWaiters(), nil
	}); err != nil {
		t.Fatalf("the start never waited on the clock: %v", err)
	}
	clock.Step(4 * time.Second)
	if p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{}); err != nil || p.Status.Phase == corev1.PodRunning {
		t.Fatalf("pod %v (%v) before its application started, want not Running", p.Status.Phase, err)
	}
	clock.Step(time.Second)
	if err := wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	}); err != nil {
		t.Fatalf("pod not Running once started: %v", err)
	}
}

// fakeRuntime starts a runtime for the pods of selector on a fake API and
// a fake clock, until the test ends.
func fakeRuntime(t *testing.T, selector string) (context.Context, *fake.Clientset, *clocktesting.FakeClock, *podrun.Runtime) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	client := fake.NewClientset()
	clock := clocktesting.NewFakeClock(time.Now())
	rtCtx, stop := context.WithCancel(ctx)
	rt, err := podrun.Start(rtCtx, client, selector, podrun.WithClock(clock), podrun.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(); rt.Wait(); cancel() })
	return ctx, client, clock, rt
}
