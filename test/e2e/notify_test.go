package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// hookReceiver is a webhook that keeps every body POSTed to it.
type hookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

// newHookReceiver serves until the test ends; started before lastcall, it
// outlives lastcall's flush at shutdown.
func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook got %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(h.Close)
	return h
}

// messages returns the JSON objects received so far.
func (h *hookReceiver) messages(t *testing.T) []map[string]any {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, b := range h.bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("webhook body is not a JSON object: %v\n%s", err, b)
		}
		out = append(out, m)
	}
	return out
}

// slackTexts splits the default payload's messages into received
// (":warning:") and finished ones.
func slackTexts(t *testing.T, msgs []map[string]any) (received, finished []string) {
	t.Helper()
	for _, m := range msgs {
		text, ok := m["text"].(string)
		if !ok || len(m) != 1 {
			t.Fatalf("webhook body is not a Slack message {\"text\": ...}: %v", m)
		}
		if strings.HasPrefix(text, ":warning:") {
			received = append(received, text)
		} else {
			finished = append(finished, text)
		}
	}
	return received, finished
}

// A spot notice and a rebalance recommendation (set to drain) hold the
// node in one episode, and the webhook hears once that the node is going
// and once that it is drained: the second signal's notification is
// deduplicated.
func TestNotifyAgentOncePerNode(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "notify", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 2, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 2 })

	hook := newHookReceiver(t)
	trigger := aemm.TriggerAfter(time.Second)
	imds := startAEMM(t, aemm.Config{
		InstanceID: "i-0e2e00000000notify", MockTriggerTime: trigger, RebalanceTriggerTime: trigger,
		ASGTerminationDelay: aemm.Never, Events: &aemm.ScheduledEvent{State: "completed"},
	})
	a := startAgent(t, name, imds.URL(), "--rebalance-action=drain", "--imds-signals=spot,rebalance",
		"--webhook-url="+hook.URL+"/services/T0/B0/e2e", "--cluster-name=e2e")

	// Both notices held the node, and both drains ended.
	waitNode(t, name, func(n *corev1.Node) bool {
		st, _ := node.StateOf(n)
		return len(st.Holds) == 2 && st.Holds[0].Drain == "success" && st.Holds[1].Drain == "success"
	})
	notified := func(phase, result string) float64 {
		return a.metric(t, "lastcall_notifications_total", map[string]string{"phase": phase, "result": result})
	}
	eventually(t, "the second signal's notification deduplicated, the first ones sent", func() bool {
		return notified("received", "deduplicated") >= 1 && notified("received", "sent") == 1 && notified("finished", "sent") == 1
	})

	received, finished := slackTexts(t, hook.messages(t))
	if len(received) != 1 || len(finished) != 1 {
		t.Fatalf("webhook got %d received and %d finished notifications, want 1 and 1:\n%q\n%q", len(received), len(finished), received, finished)
	}
	for _, want := range []string{"on node " + name + " in cluster e2e: drain started, deadline ", "(in "} {
		if !strings.Contains(received[0], want) {
			t.Errorf("received notification %q does not contain %q", received[0], want)
		}
	}
	if !strings.HasPrefix(finished[0], ":white_check_mark: node "+name+" in cluster e2e drained in ") || !strings.HasSuffix(finished[0], ": 2 pods evicted") {
		t.Errorf("finished notification %q", finished[0])
	}
	for _, r := range []string{"failed", "dropped"} {
		if got := a.metric(t, "lastcall_notifications_total", map[string]string{"result": r}); got != 0 {
			t.Errorf("notifications_total{result=%s} = %v", r, got)
		}
	}
}

// A spot warning and a terminate lifecycle hook about one instance give
// the webhook one received and one finished notification for it, through
// a template file; the lifecycle action is completed once.
func TestNotifyQueueOncePerInstance(t *testing.T) {
	e := newAWSEnv(t)
	m := e.group(t, 1, nil)[0]
	hook := newHookReceiver(t)
	tmpl := filepath.Join(t.TempDir(), "hook.tmpl")
	if err := os.WriteFile(tmpl, []byte(`{"phase": "${phase}", "instance": "${instance}", "node": "${node}",
  "kind": "${kind}", "result": "${result}", "mode": "${mode}", "cluster": "${cluster}"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	e.send(t, spotWarning(m.instance))
	e.send(t, terminateHook(m))
	p := e.startProcessor(t, "notify", "--webhook-url="+hook.URL, "--webhook-template-file="+tmpl, "--cluster-name=e2e")

	waitNode(t, m.node, drainedNode)
	eventually(t, "the lifecycle action completed and both messages deleted", func() bool {
		_, ok := e.proxy.Completed(m.instance)
		return ok && e.depth(t) == 0
	})
	notified := func(phase, result string) float64 {
		return p.metric(t, "lastcall_notifications_total", map[string]string{"phase": phase, "result": result})
	}
	eventually(t, "the second message's notification deduplicated, the first ones sent", func() bool {
		return notified("received", "deduplicated") >= 1 && notified("received", "sent") == 1 && notified("finished", "sent") == 1
	})

	got := map[string]int{}
	for _, msg := range hook.messages(t) {
		if msg["instance"] != m.instance || msg["node"] != m.node || msg["mode"] != "queue" || msg["cluster"] != "e2e" {
			t.Errorf("notification %v, want instance %s on node %s", msg, m.instance, m.node)
		}
		if msg["phase"] == "finished" && msg["result"] != "success" {
			t.Errorf("finished notification %v, want result success", msg)
		}
		got[msg["phase"].(string)]++
	}
	if got["received"] != 1 || got["finished"] != 1 || len(got) != 2 {
		t.Errorf("webhook got %v, want one received and one finished", got)
	}
	completions := 0
	for _, c := range e.proxy.Calls() {
		if c.Action == "CompleteLifecycleAction" && c.InstanceID == m.instance && c.ErrorCode == "" {
			completions++
		}
	}
	if completions != 1 {
		t.Errorf("lifecycle action completed %d times, want once", completions)
	}
}
