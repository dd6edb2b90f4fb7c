package traffic

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/test/cluster"
)

// nodeSeq makes node names unique within the package's cluster.
var nodeSeq atomic.Int64

// pool adds n Ready nodes labelled for this test only and an upstream for
// each, named after its node. It returns the pool's label selector and the
// upstreams, in the order of the nodes' names.
func pool(t *testing.T, n int) (string, []*upstream) {
	t.Helper()
	label := fmt.Sprintf("pool-%d", nodeSeq.Add(1))
	var ups []*upstream
	for i := range n {
		name := fmt.Sprintf("%s-%c", label, 'a'+i)
		if _, err := env.AddNode(testContext(t), name, cluster.WithLabels(map[string]string{"traffic-pool": label})); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		ups = append(ups, newUpstream(t, name))
	}
	return "traffic-pool=" + label, ups
}

// startNodeBalancer starts a node balancer over the selected nodes, each
// node's target its upstream.
func startNodeBalancer(t *testing.T, selector string, delay time.Duration, clk clock.Clock, ups ...*upstream) *NodeBalancer {
	t.Helper()
	byName := map[string]string{}
	for _, u := range ups {
		byName[u.name] = u.addr
	}
	b, err := StartNodeBalancer(testContext(t), env.Client, NodeBalancerConfig{
		Selector: selector,
		Target: func(node string) (string, bool) {
			addr, ok := byName[node]
			return addr, ok
		},
		DeregistrationDelay: delay,
		Proxy:               ProxyConfig{Clock: clk, UpstreamTimeout: waitTimeout, Logger: testLogger(t)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exclude sets or removes the label that takes a node out of load
// balancers.
func exclude(t *testing.T, node string, on bool) {
	t.Helper()
	value := `"true"`
	if !on {
		value = "null"
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, corev1.LabelNodeExcludeBalancers, value)
	if _, err := env.Client.CoreV1().Nodes().Patch(testContext(t), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling node %s: %v", node, err)
	}
}

// slowRequest sends a GET to /slow in the background; its status code and
// body, or its error, come on the channel returned.
func slowRequest(url string) <-chan string {
	out := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: waitTimeout}).Get(url + "/slow")
		if err != nil {
			out <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			out <- err.Error()
			return
		}
		out <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	return out
}

func TestNodeBalancerDeregistersAnExcludedNodeAfterTheDelay(t *testing.T) {
	const delay = 5 * time.Second
	selector, ups := pool(t, 2)
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	bal := startNodeBalancer(t, selector, delay, fc, ups...)
	if got := bal.Nodes(); len(got) != 2 {
		t.Fatalf("nodes %v, want both of the pool", got)
	}
	// The first request goes to the first node, and stays in flight.
	leaving, staying := ups[0], ups[1]
	inFlight := slowRequest(bal.URL())
	eventually(t, "a request in flight", func() bool { return leaving.inFlight.Load() == 1 })

	exclude(t, leaving.name, true)
	eventually(t, "the deregistration to be pending", func() bool { return bal.queue.len() == 1 && fc.HasWaiters() })
	fc.Step(delay - time.Millisecond)
	if got := answers(t, bal.URL(), 4); got[leaving.name] != 2 || got[staying.name] != 2 {
		t.Errorf("during the delay: answered by %v, want both nodes", got)
	}
	fc.Step(time.Millisecond)
	waitBackends(t, bal.Nodes, staying.name)
	if got := answers(t, bal.URL(), 4); got[staying.name] != 4 {
		t.Errorf("after the delay: answered by %v, want %s only", got, staying.name)
	}
	leaving.release()
	select {
	case got := <-inFlight:
		if want := "200 " + leaving.name; got != want {
			t.Errorf("the request in flight ended with %q, want %q", got, want)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the request in flight did not end")
	}
}

func TestNodeBalancerKeepsANodeThatComesBackWithinTheDelay(t *testing.T) {
	const delay = 5 * time.Second
	selector, ups := pool(t, 2)
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	bal := startNodeBalancer(t, selector, delay, fc, ups...)
	node := ups[0].name
	exclude(t, node, true)
	eventually(t, "the deregistration to be pending", func() bool { return bal.queue.len() == 1 && fc.HasWaiters() })
	exclude(t, node, false)
	// The node's return shows as a change of state that cancels the
	// pending deregistration; then the latter falls due.
	eventually(t, "the node's return seen", func() bool {
		bal.mu.Lock()
		defer bal.mu.Unlock()
		st := bal.nodes[node]
		return st != nil && st.eligible
	})
	fc.Step(delay)
	eventually(t, "the deregistration's time to pass", func() bool { return bal.queue.len() == 0 })
	if got := bal.Nodes(); len(got) != 2 {
		t.Errorf("nodes %v, want both", got)
	}
}

func TestNodeBalancerDeregistersADeletedNode(t *testing.T) {
	selector, ups := pool(t, 2)
	bal := startNodeBalancer(t, selector, 0, nil, ups...)
	if err := env.Client.CoreV1().Nodes().Delete(testContext(t), ups[0].name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, bal.Nodes, ups[1].name)
	if got := answers(t, bal.URL(), 4); got[ups[1].name] != 4 {
		t.Errorf("answered by %v, want %s only", got, ups[1].name)
	}
}

func TestNodeBalancerAnswers503WithoutNodes(t *testing.T) {
	bal := startNodeBalancer(t, "traffic-pool=none", 0, nil)
	if code, _ := get(t, bal.URL()); code != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 503", code)
	}
}

// node is a node as the informer gives it.
func node(name string, ready bool, labels map[string]string) *corev1.Node {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}}},
	}
}

// The informer's events, given straight to the balancer: which nodes are
// registered, and when they leave.
func TestNodeBalancerRegistration(t *testing.T) {
	const delay = 5 * time.Second
	excludedLabel := map[string]string{corev1.LabelNodeExcludeBalancers: ""}
	fc := testingclock.NewFakeClock(time.Unix(1e9, 0))
	b := &NodeBalancer{
		balancer: newBalancer(ProxyConfig{Clock: fc, Logger: testLogger(t)}, func(string) (string, bool) { return "", false }),
		cfg:      NodeBalancerConfig{DeregistrationDelay: delay},
		nodes:    map[string]*nodeState{},
	}
	go b.queue.run(testContext(t))
	steps := []struct {
		name    string
		observe func()
		step    time.Duration
		want    []string
	}{
		{"Ready nodes register at once", func() {
			b.observe("a", node("a", true, nil), true)
			b.observe("b", node("b", true, nil), false)
			b.observe("c", node("c", true, nil), false)
		}, 0, []string{"a", "b", "c"}},
		{"a node not Ready, excluded or deleted is not registered", func() {
			b.observe("x", node("x", false, nil), false)
			b.observe("y", node("y", true, excludedLabel), false)
			b.observe("z", nil, false)
		}, 0, []string{"a", "b", "c"}},
		{"a stops being Ready, b is excluded, c is deleted: they stay for the delay", func() {
			b.observe("a", node("a", false, nil), false)
			b.observe("b", node("b", true, excludedLabel), false)
			b.observe("c", nil, false)
		}, delay - time.Millisecond, []string{"a", "b", "c"}},
		{"an update that changes nothing does not put the deregistration off", func() {
			b.observe("a", node("a", false, map[string]string{"heartbeat": "1"}), false)
		}, time.Millisecond, nil},
		{"a node becomes Ready and registers at once", func() {
			b.observe("x", node("x", true, nil), false)
		}, 0, []string{"x"}},
	}
	for _, s := range steps {
		s.observe()
		if s.step > 0 {
			fc.Step(s.step)
		}
		eventually(t, fmt.Sprintf("%s: nodes %v (have %v)", s.name, s.want, b.Nodes()), func() bool {
			return slices.Equal(b.Nodes(), s.want)
		})
	}
}
