package podrun_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/podrun"
)

// c is the package's cluster, started once by TestMain.
var c *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &c)) }

// testTimeout bounds each test's work on the cluster.
const testTimeout = 60 * time.Second

// env is one test's namespace, kwok node and runtime, which serves the
// pods labelled cluster.ServedLabel=<namespace>.
type env struct {
	ctx  context.Context
	ns   string
	node string
	rt   *podrun.Runtime
}

// setup makes a namespace and a node and starts a runtime for the test,
// stopped (and waited for) when the test ends.
func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	ns, err := c.CreateNamespace(ctx, "podrun")
	if err != nil {
		t.Fatal(err)
	}
	node := ns + "-node"
	if _, err := c.AddNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	rtCtx, stop := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	rt, err := podrun.Start(rtCtx, c.Client, cluster.ServedLabel+"="+ns, podrun.WithLogger(log))
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		rt.Wait()
	})
	return &env{ctx: ctx, ns: ns, node: node, rt: rt}
}

// podOption changes a pod before it is created.
type podOption func(*corev1.Pod)

func onSigterm(behaviour string) podOption {
	return func(p *corev1.Pod) { p.Annotations[podrun.SignalAnnotation] = behaviour }
}

func grace(seconds int64) podOption {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &seconds }
}

func preStop(h *corev1.LifecycleHandler) podOption {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: h} }
}

// unserved drops the label that hands the pod to the runtime.
func unserved(p *corev1.Pod) { delete(p.Labels, cluster.ServedLabel) }

// createPod creates a pod bound to the test's node and served by its
// runtime.
func (e *env) createPod(t *testing.T, name string, opts ...podOption) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{cluster.ServedLabel: e.ns},
			Annotations: map[string]string{},
		},
		Spec: corev1.PodSpec{
			NodeName:   e.node,
			Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	for _, opt := range opts {
		opt(pod)
	}
	pod, err := c.Client.CoreV1().Pods(e.ns).Create(e.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// waitPod polls the pod (this UID) until cond holds and returns it.
func (e *env) waitPod(t *testing.T, pod *corev1.Pod, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	err := wait.PollUntilContextCancel(e.ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.UID != pod.UID {
			return false, errors.New("pod replaced")
		}
		got = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s: waiting until %s: %v (last seen %+v)", pod.Name, what, err, got)
	}
	return got
}

// waitReady waits until the pod is Running and Ready and returns it.
func (e *env) waitReady(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	return e.waitPod(t, pod, "Ready", cluster.PodReady)
}

// waitGone waits until the pod (this UID) no longer exists.
func (e *env) waitGone(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	err := wait.PollUntilContextCancel(e.ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && got.UID != pod.UID, err
	})
	if err != nil {
		t.Fatalf("pod %s still there: %v", pod.Name, err)
	}
}

// watchRemoval watches the pod from its version given; the function it
// returns waits until the pod (this UID) is deleted and returns its last
// state.
func (e *env) watchRemoval(t *testing.T, pod *corev1.Pod) func() *corev1.Pod {
	t.Helper()
	w, err := c.Client.CoreV1().Pods(pod.Namespace).Watch(e.ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", pod.Name).String(),
		ResourceVersion: pod.ResourceVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return func() *corev1.Pod {
		t.Helper()
		for {
			select {
			case <-e.ctx.Done():
				t.Fatalf("pod %s not deleted: %v", pod.Name, e.ctx.Err())
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatalf("watch of pod %s ended", pod.Name)
				}
				if p, isPod := ev.Object.(*corev1.Pod); isPod && ev.Type == watch.Deleted && p.UID == pod.UID {
					return p
				}
			}
		}
	}
}

// checkExit checks the last state of a removed pod: its phase and the exit
// code of its container.
func checkExit(t *testing.T, p *corev1.Pod, phase corev1.PodPhase, code int32) {
	t.Helper()
	cs := p.Status.ContainerStatuses
	if p.Status.Phase != phase || len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != code {
		t.Errorf("removed pod: phase %s, containers %+v; want %s and exit code %d", p.Status.Phase, cs, phase, code)
	}
}

// deletePod deletes the pod with its own grace period and returns when.
func (e *env) deletePod(t *testing.T, pod *corev1.Pod) time.Time {
	t.Helper()
	begin := time.Now()
	err := c.Client.CoreV1().Pods(pod.Namespace).Delete(e.ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil {
		t.Fatal(err)
	}
	return begin
}

// forceDelete removes the pod object at once. It is for t.Cleanup, when the
// test's context has ended.
func forceDelete(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	zero := int64(0)
	err := c.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
}

// addr returns the address of the pod's server.
func (e *env) addr(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	a, ok := e.rt.Addr(pod.UID)
	if !ok {
		t.Fatalf("no address for pod %s", pod.Name)
	}
	return a
}

// get makes one request on a new connection and returns the body.
func get(ctx context.Context, addr string) (string, error) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	return string(b), err
}

// mustServe checks that the server at addr answers with the pod's name.
func mustServe(ctx context.Context, t *testing.T, addr, name string) {
	t.Helper()
	body, err := get(ctx, addr)
	if err != nil || body != name {
		t.Fatalf("GET %s = %q, %v; want %q", addr, body, err, name)
	}
}

// mustRefuse checks that nothing accepts connections at addr.
func mustRefuse(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling %s: %v, want connection refused", addr, err)
	}
}

// held is a request in flight: the server has sent its headers and waits
// for the end of the body.
type held struct {
	body *io.PipeWriter
	resp *http.Response
}

// hold starts a request whose body stays open until finish.
func hold(ctx context.Context, t *testing.T, addr string) *held {
	t.Helper()
	pr, pw := io.Pipe()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("holding a request to %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("holding a request to %s: %s", addr, resp.Status)
	}
	t.Cleanup(func() {
		pw.Close()
		resp.Body.Close()
	})
	return &held{body: pw, resp: resp}
}

// finish ends the request's body and returns the answer.
func (h *held) finish() (string, error) {
	h.body.Close()
	return h.answer()
}

// answer reads the rest of the answer.
func (h *held) answer() (string, error) {
	b, err := io.ReadAll(h.resp.Body)
	return string(b), err
}

// idleConn is a connection that has had one answer and stays open, idle.
func idleConn(t *testing.T, addr, name string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != name || r.Buffered() != 0 {
		t.Fatalf("GET on a kept connection: %q, %v", b, err)
	}
	return conn
}
