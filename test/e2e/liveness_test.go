package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/lastcall/lastcall/test/chart"
)

// The liveness tests run the agent under the probes the chart gives its
// DaemonSet, probed as the kubelet would: a metadata outage longer than the
// liveness probe tolerates must never make the kubelet restart the agent
// (every agent of the fleet would restart at once, drains included, and a
// restarted agent could not resume until the outage ended). The outage
// shows in lastcall_source_up and readiness instead, and the agent acts on
// the first notice once the metadata service is back.

// noticeBound is how soon after the metadata service answers again a
// notice holds the node: a read times out after 1 s and failed reads back
// off up to 10 s (interruption.Poller), plus slack.
const noticeBound = 15 * time.Second

// kubeletProbe is one of a container's probes as the kubelet runs it.
type kubeletProbe struct {
	path             string
	period, timeout  time.Duration
	failureThreshold int
}

func (p kubeletProbe) String() string {
	return fmt.Sprintf("%s every %s, timeout %s, %d failures", p.path, p.period, p.timeout, p.failureThreshold)
}

// chartAgentProbes renders the chart with its defaults, as test/chart does,
// and returns the agent container's liveness and readiness probes.
func chartAgentProbes(t *testing.T) (liveness, readiness kubeletProbe) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // helm may be built first
	defer cancel()
	out, err := chart.Template(ctx, "lastcall", "lastcall", nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := chart.Documents(out)
	if err != nil {
		t.Fatal(err)
	}
	u := chart.Find(objs, "DaemonSet")
	if u == nil {
		t.Fatal("the chart rendered no DaemonSet")
	}
	var ds appsv1.DaemonSet
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ds); err != nil {
		t.Fatal(err)
	}
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("the agent's pod has %d containers, want 1", n)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	return probeOf(t, "liveness", c.LivenessProbe), probeOf(t, "readiness", c.ReadinessProbe)
}

// probeOf reads p, filling in the kubelet's defaults for what it leaves
// out.
func probeOf(t *testing.T, what string, p *corev1.Probe) kubeletProbe {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("the agent has no HTTP %s probe: %+v", what, p)
	}
	k := kubeletProbe{path: p.HTTPGet.Path, period: 10 * time.Second, timeout: time.Second, failureThreshold: 3}
	if p.PeriodSeconds > 0 {
		k.period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		k.timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	if p.FailureThreshold > 0 {
		k.failureThreshold = int(p.FailureThreshold)
	}
	return k
}

// kubelet probes an endpoint as the kubelet does a liveness probe: every
// period, each probe failing on a status outside 200-399 or after the
// timeout, the container restarted once failureThreshold probes in a row
// have failed. It records those restarts instead of making them.
type kubelet struct {
	probe  kubeletProbe
	url    string
	client *http.Client
	start  time.Time

	mu       sync.Mutex
	probes   int
	streak   int
	restarts []string
	changed  chan struct{} // signalled after each probe
}

// startKubelet probes a's endpoint of p from now until the test ends.
func startKubelet(t *testing.T, a *agent, p kubeletProbe) *kubelet {
	t.Helper()
	k := &kubelet{probe: p, url: a.url + p.path, client: &http.Client{Timeout: p.timeout}, start: time.Now(),
		changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(p.period)
		defer tick.Stop()
		for {
			k.once(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

// once probes once and records the outcome.
func (k *kubelet) once(ctx context.Context) {
	why := ""
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	resp, err := k.client.Do(req)
	if ctx.Err() != nil {
		return
	}
	switch {
	case err != nil:
		why = err.Error()
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			why = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
	}
	k.mu.Lock()
	k.probes++
	if why == "" {
		k.streak = 0
	} else if k.streak++; k.streak == k.probe.failureThreshold {
		k.restarts = append(k.restarts, fmt.Sprintf("at +%s, after %d failed probes of %s (the last: %s)",
			time.Since(k.start).Round(time.Second), k.streak, k.probe.path, why))
		k.streak = 0 // the kubelet would have restarted the container
	}
	k.mu.Unlock()
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// waitProbes waits until n more probes have been made.
func (k *kubelet) waitProbes(t *testing.T, n int) {
	t.Helper()
	k.mu.Lock()
	want := k.probes + n
	k.mu.Unlock()
	deadline := time.After(time.Duration(n+1)*k.probe.period + k.probe.timeout + waitTimeout)
	for {
		k.mu.Lock()
		made := k.probes
		k.mu.Unlock()
		if made >= want {
			return
		}
		select {
		case <-k.changed:
		case <-deadline:
			t.Fatalf("%d probes of %s made, want %d", made, k.probe.path, want)
		}
	}
}

// checkNoRestart fails the test if the kubelet would have restarted the
// container so far.
func (k *kubelet) checkNoRestart(t *testing.T, when string) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.restarts) > 0 {
		t.Fatalf("%s, the kubelet (liveness probe %s) would have restarted the agent %d times: %s",
			when, k.probe, len(k.restarts), strings.Join(k.restarts, "; "))
	}
}

// probesOver is how many probes at period cover d and then the liveness
// probe's whole tolerance, and one more: a probe that depends on what
// stopped at the start of d has failed failureThreshold times by then.
func probesOver(d time.Duration, p kubeletProbe) int {
	return int((d+p.period-1)/p.period) + p.failureThreshold + 1
}

// readyzBody probes readiness and returns its status and body.
func (a *agent) readyzBody(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(a.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// The metadata service hangs for longer than the liveness probe tolerates,
// and longer than --source-stale-after: the kubelet never restarts the
// agent, the sources show down and the agent unready; then the service
// comes back with a spot notice, which holds the node as soon as it is
// read, and the agent is ready again.
func TestLivenessSurvivesMetadataOutage(t *testing.T) {
	liveness, readiness := chartAgentProbes(t)
	t.Logf("the chart's probes: liveness %s; readiness %s", liveness, readiness)
	const staleAfter = 5 * time.Second
	sources := []string{"imds-spot", "imds-rebalance"}
	name := newNode(t, "live-outage", nil)
	upstream := newSwitchProxy(t, startAEMM(t, quietAEMM()).URL())
	spot := spotNotice(t)
	imds := newFaultyIMDS(t, upstream.url)
	a := startAgent(t, name, imds.url, "--source-stale-after="+staleAfter.String(), "--imds-signals=spot,rebalance")
	eventually(t, "the agent ready, its sources up", func() bool {
		return a.probe(t, readiness.path) == http.StatusOK &&
			a.metric(t, "lastcall_source_up", map[string]string{"source": sources[0]}) == 1 &&
			a.metric(t, "lastcall_source_up", map[string]string{"source": sources[1]}) == 1
	})
	k := startKubelet(t, a, liveness)

	// The outage: every request hangs until the agent gives up on it.
	imds.set(faultHang)
	began := time.Now()
	k.waitProbes(t, probesOver(staleAfter, liveness))
	t.Logf("metadata hanging for %s, %d requests held", time.Since(began).Round(time.Second), imds.hung.Load())
	k.checkNoRestart(t, "during a metadata outage")
	for _, src := range sources {
		if up := a.metric(t, "lastcall_source_up", map[string]string{"source": src}); up != 0 {
			t.Errorf("%s: lastcall_source_up = %v during the outage, want 0", src, up)
		}
		if n := a.metric(t, "lastcall_source_errors_total", map[string]string{"source": src, "reason": "timeout"}); n == 0 {
			t.Errorf("%s: no timeout counted during the outage", src)
		}
	}
	code, body := a.readyzBody(t, readiness.path)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, sources[0]) || !strings.Contains(body, "last failure: timeout") {
		t.Errorf("%s = %d %q during the outage, want 503 naming %s and its failure's reason", readiness.path, code, body, sources[0])
	}
	// The probe is open to anyone who reaches the port: the reason, not
	// the error's text (which names the endpoint and what it answered).
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "deadline exceeded") || strings.Contains(body, "http") {
		t.Errorf("%s echoes a raw error during the outage: %q", readiness.path, body)
	}
	if n := waitNode(t, name, func(*corev1.Node) bool { return true }); n.Spec.Unschedulable {
		t.Fatal("the node was cordoned with no notice read")
	}

	// The service is back, with a spot notice.
	upstream.set(t, spot.URL())
	imds.set(faultPass)
	back := time.Now()
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, spotTaint) })
	took := time.Since(back)
	t.Logf("held %s after the metadata service came back", took.Round(time.Millisecond))
	if took > noticeBound {
		t.Errorf("held %s after the metadata service came back, want within %s", took, noticeBound)
	}
	eventually(t, "the agent ready again", func() bool { return a.probe(t, readiness.path) == http.StatusOK })
	k.checkNoRestart(t, "after the outage")
}

// An agent that starts while no metadata service answers (a node's agent
// restarted, or a new node, during an outage) waits for one to answer
// without the kubelet restarting it: not ready, naming why; then the
// service answers with a spot notice, and the agent detects the cloud and
// holds the node.
func TestLivenessBeforeCloudDetected(t *testing.T) {
	liveness, readiness := chartAgentProbes(t)
	closed := closedURL(t)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(closed, "http://"))
	name := newNode(t, "live-detect", nil)
	spot := spotNotice(t)
	aws := newSwitchProxy(t, "") // 502 to every request: not EC2's metadata
	a := startAgent(t, name, aws.url, "--cloud=auto", "--azure-endpoint="+closed, "--imds-signals=spot")
	k := startKubelet(t, a, liveness)

	k.waitProbes(t, probesOver(0, liveness))
	k.checkNoRestart(t, "with no metadata service answering")
	code, body := a.readyzBody(t, readiness.path)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no cloud metadata service answered") {
		t.Errorf("%s = %d %q with no metadata service answering, want 503 saying so", readiness.path, code, body)
	}

	aws.set(t, spot.URL())
	back := time.Now()
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, spotTaint) })
	took := time.Since(back)
	t.Logf("held %s after EC2's metadata service answered", took.Round(time.Millisecond))
	if bound := 10*time.Second + noticeBound; took > bound { // a detection round every 10 s
		t.Errorf("held %s after the metadata service answered, want within %s", took, bound)
	}
	eventually(t, "the agent ready", func() bool { return a.probe(t, readiness.path) == http.StatusOK })
	k.checkNoRestart(t, "once the cloud was detected")
}
