package podrun_test

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// TestServesOnceReady checks that a served pod is Ready only once its
// server listens on its own loopback address, with a pod IP from
// podrun.PodCIDR that an EndpointSlice accepts and AddrOf maps back.
func TestServesOnceReady(t *testing.T) {
	e := setup(t)
	pod := e.createPod(t, "web")
	// Whenever the pod is first seen Ready, its server answers.
	pod = e.waitReady(t, pod)
	addr := e.addr(t, pod)
	mustServe(e.ctx, t, addr, "web")

	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil || !netip.MustParsePrefix(podrun.PodCIDR).Contains(ip) {
		t.Errorf("pod IP %q, want one in %s", pod.Status.PodIP, podrun.PodCIDR)
	}
	host, err := netip.ParseAddrPort(addr)
	if err != nil || !netip.MustParsePrefix(podrun.LoopbackCIDR).Contains(host.Addr()) {
		t.Errorf("address %q, want one in %s", addr, podrun.LoopbackCIDR)
	}
	if cs := pod.Status.ContainerStatuses; len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil {
		t.Errorf("container statuses %+v, want one running and ready", cs)
	}

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{pod.Status.PodIP},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: pod.Name, UID: pod.UID},
		}},
	}
	slice, err = c.Client.DiscoveryV1().EndpointSlices(e.ns).Create(e.ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("an EndpointSlice with the pod IP: %v", err)
	}
	got, ok := e.rt.AddrOf(slice.Endpoints[0].TargetRef)
	if !ok || got != addr {
		t.Errorf("AddrOf(targetRef) = %q, %v; want %q", got, ok, addr)
	}
}

// TestUnservedPodLeftToKwok checks that a pod without the runtime's label
// is still made Ready by kwok, with a pod IP from cluster.KwokPodCIDR, and
// removed by kwok at once when deleted, and that the runtime leaves it
// alone.
func TestUnservedPodLeftToKwok(t *testing.T) {
	e := setup(t)
	pod := e.createPod(t, "plain", unserved, grace(30))
	pod = e.waitReady(t, pod)
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil || !netip.MustParsePrefix(cluster.KwokPodCIDR).Contains(ip) {
		t.Errorf("pod IP %q, want one in %s", pod.Status.PodIP, cluster.KwokPodCIDR)
	}
	if a, ok := e.rt.Addr(pod.UID); ok {
		t.Errorf("the runtime serves an unlabelled pod at %s", a)
	}
	begin := e.deletePod(t, pod)
	e.waitGone(t, pod)
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("kwok took %s to remove a deleted pod (grace 30 s), want it at once", took)
	}
}

// TestGracefulTermination checks the preStop sleep, then a graceful
// SIGTERM: the pod turns not Ready no sooner than the preStop hook ends,
// new connections are refused from then on, the request in flight is
// answered, and the pod object is removed once the server has exited,
// before the grace period ends.
func TestGracefulTermination(t *testing.T) {
	e := setup(t)
	const sleep = time.Second
	pod := e.createPod(t, "graceful", onSigterm(podrun.Graceful), grace(20),
		preStop(&corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(sleep / time.Second)}}))
	pod = e.waitReady(t, pod)
	addr := e.addr(t, pod)
	inFlight := hold(e.ctx, t, addr)

	removed := e.watchRemoval(t, pod)
	begin := e.deletePod(t, pod)
	e.waitPod(t, pod, "not Ready", func(p *corev1.Pod) bool { return !cluster.ReadyCondition(p) })
	if took := time.Since(begin); took < sleep {
		t.Errorf("not Ready %s after the delete, before the preStop sleep of %s ended", took, sleep)
	}
	mustRefuse(t, addr)

	body, err := inFlight.finish()
	if err != nil || body != "graceful" {
		t.Errorf("the request in flight at SIGTERM: %q, %v; want it answered", body, err)
	}
	checkExit(t, removed(), corev1.PodSucceeded, 0)
	if took := time.Since(begin); took >= 20*time.Second {
		t.Errorf("pod removed %s after the delete, not before the grace period ended", took)
	}
	mustRefuse(t, addr)
}

// TestExecPreStop checks a preStop exec of sh -c "sleep N".
func TestExecPreStop(t *testing.T) {
	e := setup(t)
	pod := e.createPod(t, "exec", onSigterm(podrun.Abrupt), grace(20),
		preStop(&corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 1"}}}))
	pod = e.waitReady(t, pod)
	begin := e.deletePod(t, pod)
	e.waitGone(t, pod)
	if took := time.Since(begin); took < time.Second {
		t.Errorf("pod removed %s after the delete, before its preStop sleep of 1s ended", took)
	}
}

// TestAbruptTermination checks that an abrupt SIGTERM cuts the request in
// flight and that the pod is removed at once.
func TestAbruptTermination(t *testing.T) {
	e := setup(t)
	pod := e.createPod(t, "abrupt", onSigterm(podrun.Abrupt), grace(20))
	pod = e.waitReady(t, pod)
	addr := e.addr(t, pod)
	inFlight := hold(e.ctx, t, addr)

	removed := e.watchRemoval(t, pod)
	begin := e.deletePod(t, pod)
	if body, err := inFlight.answer(); err == nil {
		t.Errorf("the request in flight at SIGTERM was answered %q", body)
	}
	mustRefuse(t, addr)
	checkExit(t, removed(), corev1.PodFailed, 143)
	if took := time.Since(begin); took >= 20*time.Second {
		t.Errorf("pod removed %s after the delete, not before the grace period ended", took)
	}
}

// TestIgnoredSigterm checks that a server ignoring SIGTERM serves until the
// grace period ends and is then killed, and the pod removed.
func TestIgnoredSigterm(t *testing.T) {
	e := setup(t)
	const gracePeriod = 3 * time.Second
	pod := e.createPod(t, "stubborn", onSigterm(podrun.Ignore), grace(int64(gracePeriod/time.Second)))
	pod = e.waitReady(t, pod)
	addr := e.addr(t, pod)
	inFlight := hold(e.ctx, t, addr)

	removed := e.watchRemoval(t, pod)
	begin := e.deletePod(t, pod)
	e.waitPod(t, pod, "being deleted", func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil })
	mustServe(e.ctx, t, addr, "stubborn")

	if body, err := inFlight.answer(); err == nil {
		t.Errorf("the request in flight at the kill was answered %q", body)
	}
	if took := time.Since(begin); took < gracePeriod {
		t.Errorf("killed %s after the delete, before the grace period of %s ended", took, gracePeriod)
	}
	mustRefuse(t, addr)
	checkExit(t, removed(), corev1.PodFailed, 137)
}

// TestAddressesNotReused checks that a pod created again with the same name
// gets another address and pod IP, and that nobody answers at the old one.
func TestAddressesNotReused(t *testing.T) {
	e := setup(t)
	first := e.waitReady(t, e.createPod(t, "again", onSigterm(podrun.Abrupt)))
	firstAddr := e.addr(t, first)
	e.deletePod(t, first)
	e.waitGone(t, first)

	second := e.waitReady(t, e.createPod(t, "again", onSigterm(podrun.Abrupt)))
	secondAddr := e.addr(t, second)
	if secondAddr == firstAddr || second.Status.PodIP == first.Status.PodIP {
		t.Errorf("the pod made again got %s, %s; the first one had %s, %s",
			secondAddr, second.Status.PodIP, firstAddr, first.Status.PodIP)
	}
	if a, ok := e.rt.Addr(first.UID); !ok || a != firstAddr {
		t.Errorf("Addr of the gone pod = %q, %v; want %q still", a, ok, firstAddr)
	}
	mustRefuse(t, firstAddr)
	mustServe(e.ctx, t, secondAddr, "again")
}

// TestKillNode checks that the servers of a killed node stop at once with
// their connections reset, and that the pod objects are left as they are.
func TestKillNode(t *testing.T) {
	e := setup(t)
	pod := e.waitReady(t, e.createPod(t, "doomed", onSigterm(podrun.Ignore)))
	t.Cleanup(func() { forceDelete(t, pod) })
	addr := e.addr(t, pod)
	idle := idleConn(t, addr, "doomed")
	inFlight := hold(e.ctx, t, addr)

	e.rt.KillNode(e.node)
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reading an idle connection after KillNode: %v, want connection reset", err)
	}
	if body, err := inFlight.answer(); err == nil {
		t.Errorf("the request in flight at KillNode was answered %q", body)
	}
	mustRefuse(t, addr)

	got, err := c.Client.CoreV1().Pods(e.ns).Get(e.ctx, pod.Name, metav1.GetOptions{})
	if err != nil || !cluster.PodReady(got) {
		t.Errorf("pod after KillNode: %v, %v; want it left Ready, as the API server still sees it", got, err)
	}
}
