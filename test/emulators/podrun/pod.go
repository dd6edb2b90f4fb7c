package podrun

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// minGraceAfterPreStop is the least time the kubelet leaves a container
// between SIGTERM and SIGKILL, even once the preStop hook has used the
// whole grace period (minimumGracePeriodInSeconds).
const minGraceAfterPreStop = 2 * time.Second

// defaultGracePeriod is the grace period of a pod deleted without one.
const defaultGracePeriod = 30 * time.Second

// runPod plays the kubelet for one pod: it starts the server once the pod
// is bound to a node, and terminates it once the pod is being deleted.
func (r *Runtime) runPod(ctx context.Context, mb *mailbox) {
	pod, ok := r.waitPod(ctx, mb, func(p *corev1.Pod) bool {
		return p.Spec.NodeName != "" || p.DeletionTimestamp != nil
	})
	if !ok {
		return
	}
	log := r.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "node", pod.Spec.NodeName)
	if pod.Spec.NodeName == "" || r.nodeDead(pod.Spec.NodeName) {
		return // the API server deletes unbound pods; a dead node runs nothing
	}
	if pod.DeletionTimestamp != nil {
		r.remove(ctx, pod, log) // deleted before it started
		return
	}
	srv, podIP, err := r.startServer(ctx, pod, log)
	if err != nil {
		log.Error("pod not started", "error", err)
		return
	}
	if srv == nil {
		return // its node died meanwhile
	}
	defer r.forget(pod.UID)
	log = log.With("addr", srv.addr, "podIP", podIP)
	if err := r.patchStatus(ctx, pod, runningStatus(pod, podIP, r.now())); err != nil {
		log.Error("marking the pod Running and Ready", "error", err)
	} else {
		log.Info("pod serving")
	}

	r.wg.Go(func() { // the server may die of KillNode or of the runtime's end
		<-srv.exited
		mb.notify()
	})
	pod, ok = r.waitPod(ctx, mb, func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil || isClosed(srv.exited) })
	switch {
	case isClosed(srv.exited):
		return // killed with its node or the runtime: nothing more is said
	case ctx.Err() != nil:
		srv.kill(exitSIGKILL, false)
		return
	case !ok:
		log.Info("pod object gone: killing the server")
		srv.kill(exitSIGKILL, false)
		return
	}
	r.terminate(ctx, pod, srv, log)
}

// waitPod waits until the pod's latest version satisfies done. ok is false
// if the pod object is gone or ctx ended first.
func (r *Runtime) waitPod(ctx context.Context, mb *mailbox, done func(*corev1.Pod) bool) (*corev1.Pod, bool) {
	for {
		pod, gone := mb.latest()
		if gone {
			return pod, false
		}
		if pod != nil && done(pod) {
			return pod, true
		}
		select {
		case <-mb.wake:
		case <-ctx.Done():
			return pod, false
		}
	}
}

// terminate runs the preStop hook, sends "SIGTERM", kills the server at the
// end of the grace period unless it exited before, and removes the pod.
func (r *Runtime) terminate(ctx context.Context, pod *corev1.Pod, srv *server, log *slog.Logger) {
	begin := r.clock.Now()
	grace := defaultGracePeriod
	if s := pod.DeletionGracePeriodSeconds; s != nil {
		grace = time.Duration(*s) * time.Second
	}
	log = log.With("grace", grace)
	preStop, hasPreStop, err := preStopSleep(pod)
	switch {
	case err != nil:
		log.Warn("preStop hook skipped", "error", err)
	case hasPreStop:
		log.Info("preStop hook", "sleep", preStop)
		if !r.sleep(ctx, min(preStop, grace), srv) {
			return
		}
	}
	left := max(grace-r.clock.Since(begin), minGraceAfterPreStop)

	signal := onSigterm(pod, log)
	log.Info("SIGTERM", "behaviour", signal, "killAfter", left)
	switch signal {
	case Abrupt:
		srv.kill(exitSIGTERM, false)
	case Ignore:
	default:
		srv.shutdown()
	}
	if signal != Ignore {
		if err := r.patchStatus(ctx, pod, notReadyStatus(r.now())); err != nil && !apierrors.IsNotFound(err) {
			log.Error("marking the pod not Ready", "error", err)
		}
	}
	if r.sleep(ctx, left, srv) {
		log.Info("grace period over: killing the server")
		srv.kill(exitSIGKILL, false)
	}
	code, nodeDied := srv.exitStatus()
	if nodeDied || ctx.Err() != nil {
		return
	}
	log.Info("server exited", "exitCode", code)
	if err := r.patchStatus(ctx, pod, terminatedStatus(pod, code, r.now())); err != nil && !apierrors.IsNotFound(err) {
		log.Error("marking the pod terminated", "error", err)
	}
	r.remove(ctx, pod, log)
}

// onSigterm returns what the pod's server does on SIGTERM.
func onSigterm(pod *corev1.Pod, log *slog.Logger) string {
	switch v := pod.Annotations[SignalAnnotation]; v {
	case Graceful, Abrupt, Ignore:
		return v
	case "":
		return Graceful
	default:
		log.Warn("unknown SIGTERM behaviour: graceful instead", "annotation", SignalAnnotation, "value", v)
		return Graceful
	}
}

// sleep waits d and returns true, or returns false as soon as the server
// exits or ctx ends.
func (r *Runtime) sleep(ctx context.Context, d time.Duration, srv *server) bool {
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-srv.exited:
		return false
	case <-ctx.Done():
		return false
	}
}

// remove deletes the pod object with grace 0, as the kubelet does once
// every container has stopped.
func (r *Runtime) remove(ctx context.Context, pod *corev1.Pod, log *slog.Logger) {
	zero := int64(0)
	err := r.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	switch {
	case err == nil:
		log.Info("pod removed")
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
	default:
		log.Error("removing the pod", "error", err)
	}
}

// patchStatus applies status to this pod with a strategic merge patch of the
// status subresource. The patch names the pod's UID: if the name now
// belongs to another pod, the API server refuses it (metadata.uid is
// immutable).
func (r *Runtime) patchStatus(ctx context.Context, pod *corev1.Pod, status corev1.PodStatus) error {
	patch := map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   status,
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, b,
		metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patching the status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

func (r *Runtime) now() metav1.Time { return metav1.NewTime(r.clock.Now()) }

// runningStatus is the status of a pod whose server listens.
func runningStatus(pod *corev1.Pod, ip netip.Addr, now metav1.Time) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip.String(),
		PodIPs:    []corev1.PodIP{{IP: ip.String()}},
		StartTime: &now,
		Conditions: conditions(now, corev1.ConditionTrue,
			corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady),
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			Image:   c.Image,
			Ready:   true,
			Started: new(true),
			State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}

// notReadyStatus is the status of a pod whose server no longer accepts
// connections.
func notReadyStatus(now metav1.Time) corev1.PodStatus {
	return corev1.PodStatus{Conditions: conditions(now, corev1.ConditionFalse, corev1.ContainersReady, corev1.PodReady)}
}

// terminatedStatus is the status of a pod whose server exited with code.
func terminatedStatus(pod *corev1.Pod, code int, now metav1.Time) corev1.PodStatus {
	st := notReadyStatus(now)
	st.Phase = corev1.PodFailed
	reason := "Error"
	if code == 0 {
		st.Phase, reason = corev1.PodSucceeded, "Completed"
	}
	started := now
	if pod.Status.StartTime != nil {
		started = *pod.Status.StartTime
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			Image:   c.Image,
			Started: new(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: int32(code), Reason: reason, StartedAt: started, FinishedAt: now,
			}},
		})
	}
	return st
}

// conditions are pod conditions of these types, all with status s.
func conditions(now metav1.Time, s corev1.ConditionStatus, types ...corev1.PodConditionType) []corev1.PodCondition {
	out := make([]corev1.PodCondition, 0, len(types))
	for _, t := range types {
		out = append(out, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
	}
	return out
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
