package podrun

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
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
	if d, err := time.ParseDuration(pod.Annotations[StartupAnnotation]); err == nil && d > 0 {
		select { // the application starts
		case <-ctx.Done():
			return
		case <-r.clock.After(d):
		}
		latest, gone := mb.latest()
		if gone {
			return
		}
		if latest != nil {
			pod = latest
		}
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
	ready := gatesReady(pod)
	if err := r.patchStatus(ctx, pod, runningStatus(pod, podIP, ready, r.now())); err != nil {
		log.Error("marking the pod Running", "error", err)
	} else {
		log.Info("pod serving", "ready", ready)
	}

	r.wg.Go(func() { // the server may die of KillNode or of the runtime's end
		<-srv.exited
		mb.notify()
	})
	// Until its deletion begins, the pod is Ready when its readiness gates
	// are: each version seen brings the Ready condition in step with them.
	pod, ok = r.waitPod(ctx, mb, func(p *corev1.Pod) bool {
		if p.DeletionTimestamp != nil || isClosed(srv.exited) {
			return true
		}
		ready = r.followGates(ctx, p, ready, log)
		return false
	})
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

// followGates patches the pod's Ready condition to what its readiness gates
// make it, if that differs from ready, the value last sent, and returns the
// value now sent. Only the Ready condition is patched: the conditions of the
// gates, which other clients set, are left as they are.
func (r *Runtime) followGates(ctx context.Context, pod *corev1.Pod, ready bool, log *slog.Logger) bool {
	want := gatesReady(pod)
	if want == ready {
		return ready
	}
	status := corev1.PodStatus{Conditions: conditions(r.now(), conditionStatus(want), corev1.PodReady)}
	if err := r.patchStatus(ctx, pod, status); err != nil {
		if !apierrors.IsNotFound(err) {
			log.Error("following the readiness gates", "ready", want, "error", err)
		}
		return ready // tried again on the pod's next version
	}
	log.Info("readiness gates changed", "ready", want)
	return want
}

// gatesReady reports whether every readiness gate of the pod has a condition
// of its type with status True in the pod's status, which the kubelet
// requires, beside ready containers, of a Ready pod. A gate whose condition
// is missing holds the pod not Ready.
func gatesReady(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == g.ConditionType })
		if i < 0 || pod.Status.Conditions[i].Status != corev1.ConditionTrue {
			return false
		}
	}
	return true
}

// conditionStatus is True or False.
func conditionStatus(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
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

// runningStatus is the status of a pod whose server listens: its
// containers are ready, and the pod is Ready if ready (its readiness gates
// allow it). The conditions it sets are podrun's own: a strategic merge
// patch merges status.conditions by type, so the conditions of the
// readiness gates are left as they are.
func runningStatus(pod *corev1.Pod, ip netip.Addr, ready bool, now metav1.Time) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip.String(),
		PodIPs:    []corev1.PodIP{{IP: ip.String()}},
		StartTime: &now,
		Conditions: append(conditions(now, corev1.ConditionTrue,
			corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady),
			conditions(now, conditionStatus(ready), corev1.PodReady)...),
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
