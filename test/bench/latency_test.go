package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
	"github.com/lastcall/lastcall/test/emulators/gcemeta"
)

// latencyRuns is the number of notices each source gets.
const latencyRuns = 20

// BenchmarkNoticeToCordon measures, per source, the time from a notice
// appearing in instance metadata to the node being cordoned, as seen by a
// watch on the node, over latencyRuns runs. Each run has a new node,
// metadata service and agent process, so the agent's poll phase against
// the notice is random, as in life. On EC2, aws-node-termination-handler
// runs in each run too, on a node of its own against the same AEMM and
// notice.
func BenchmarkNoticeToCordon(b *testing.B) {
	lastcallBinary(b)
	b.Run("aws-spot", func(b *testing.B) {
		nthSetup(b)
		var lc, nt []time.Duration
		for range b.N {
			for range latencyRuns {
				l, n := noticeToCordonAWS(b)
				lc, nt = append(lc, l), append(nt, n)
			}
		}
		med, p99 := percentile(lc, 0.5), percentile(lc, 0.99)
		nmed, np99 := percentile(nt, 0.5), percentile(nt, 0.99)
		b.ReportMetric(med.Seconds(), "median-s")
		b.ReportMetric(p99.Seconds(), "p99-s")
		b.ReportMetric(nmed.Seconds(), "nth-median-s")
		b.ReportMetric(np99.Seconds(), "nth-p99-s")
		b.Logf("notice to cordon over %d runs: lastcall %v; %s %v", len(lc), lc, nthName, nt)
		r := nmed.Seconds() / med.Seconds()
		results.compare(fmt.Sprintf("notice → cordon, median / p99 of %d: spot notice, EC2 IMDS (AEMM spot mode); the node cordoned and carrying the agent's spot taint", len(lc)),
			secs(med)+" / "+secs(p99), nthName+": "+secs(nmed)+" / "+secs(np99),
			times(nmed.Seconds(), med.Seconds())+" / "+times(np99.Seconds(), p99.Seconds()),
			"median ≤ 1/10 of "+nthName+"'s "+check(r >= 10))
	})
	for _, src := range []struct {
		name, what string
		once       func(*testing.B) time.Duration
	}{
		{"gce-preempted", "preemption, GCE metadata (long-polled)", noticeToCordonGCE},
		{"azure-preempt", "Preempt, Azure Scheduled Events (polled every 250 ms)", noticeToCordonAzure},
	} {
		b.Run(src.name, func(b *testing.B) {
			var lat []time.Duration
			for range b.N {
				for range latencyRuns {
					lat = append(lat, src.once(b))
				}
			}
			med, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
			b.ReportMetric(med.Seconds(), "median-s")
			b.ReportMetric(p99.Seconds(), "p99-s")
			b.Logf("notice to cordon over %d runs: %v", len(lat), lat)
			results.add(fmt.Sprintf("notice → cordon, median / p99 of %d: %s", len(lat), src.what), secs(med)+" / "+secs(p99), "", "")
		})
	}
}

// cordonedAfter waits for the node to be cordoned after the notice at t0.
func cordonedAfter(b *testing.B, ctx context.Context, updates <-chan stamped[*corev1.Node], name string, at time.Time) time.Duration {
	b.Helper()
	for u := range updates {
		if u.obj.Spec.Unschedulable {
			if u.at.Before(at) {
				b.Fatalf("node %s cordoned before the notice appeared", name)
			}
			return u.at.Sub(at)
		}
	}
	b.Fatalf("node %s never cordoned: %v", name, ctx.Err())
	return 0
}

// heldAfter waits for the node to be held for the spot notice at t0:
// cordoned and carrying the agent's spot taint.
func heldAfter(b *testing.B, ctx context.Context, updates <-chan stamped[*corev1.Node], name, taint string, at time.Time) time.Duration {
	b.Helper()
	for u := range updates {
		if heldFor(u.obj, taint) {
			if u.at.Before(at) {
				b.Fatalf("node %s held before the notice appeared", name)
			}
			return u.at.Sub(at)
		}
	}
	b.Fatalf("node %s never cordoned with taint %s: %v", name, taint, ctx.Err())
	return 0
}

// noticeToCordonAWS runs lastcall and aws-node-termination-handler, each
// on a node of its own, against one AEMM whose spot notice appears once
// both are running, and returns each one's notice → held time.
func noticeToCordonAWS(b *testing.B) (lastcall, anchor time.Duration) {
	b.Helper()
	lcNode, nthNode := uniq("lat"), uniq("lat-nth")
	addNode(b, lcNode, nil)
	addNode(b, nthNode, nil)
	trigger := aemm.TriggerAfter(noticeLead)
	imds := startAEMM(b, spotNotice(trigger))
	defer imds.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	lcUpdates, nthUpdates := watchNode(b, ctx, lcNode), watchNode(b, ctx, nthNode)
	a := lastcallRun.start(b, lcNode, imds.URL(), nil)
	defer a.Stop()
	h := nthRun.start(b, nthNode, imds.URL(), nil)
	defer h.Stop()
	if time.Now().After(trigger) {
		b.Fatalf("the agents took until after the notice to start; widen noticeLead")
	}
	lastcall = heldAfter(b, ctx, lcUpdates, lcNode, lastcallRun.spotTaint, trigger)
	anchor = heldAfter(b, ctx, nthUpdates, nthNode, nthRun.spotTaint, trigger)
	return lastcall, anchor
}

func noticeToCordonGCE(b *testing.B) time.Duration {
	b.Helper()
	name := uniq("lat-gce")
	addNode(b, name, nil)
	g, err := gcemeta.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	updates := watchNode(b, ctx, name)
	a := startAgentEnv(b, name, "", "LASTCALL_CLOUD=gce", "GCE_METADATA_HOST="+g.Host())
	defer a.Stop()
	waitSourceUp(b, a, "gce-preempted")
	at := time.Now()
	g.Set("instance/preempted", "TRUE")
	return cordonedAfter(b, ctx, updates, name, at)
}

func noticeToCordonAzure(b *testing.B) time.Duration {
	b.Helper()
	name := uniq("lat-az")
	addNode(b, name, nil)
	az, err := azuremeta.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer az.Close()
	az.SetComputeName(name) // the node has no providerID: the agent asks instance metadata
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	updates := watchNode(b, ctx, name)
	a := startAgentEnv(b, name, "", "LASTCALL_CLOUD=azure", "LASTCALL_AZURE_ENDPOINT="+az.URL())
	defer a.Stop()
	waitSourceUp(b, a, "azure-scheduled-events")
	at := time.Now()
	az.SetEvents(azuremeta.Event{EventID: "bench-" + name, EventType: "Preempt", ResourceType: "VirtualMachine",
		Resources: []string{name}, EventStatus: "Scheduled", NotBefore: at.Add(30 * time.Second).UTC().Format(http.TimeFormat)})
	return cordonedAfter(b, ctx, updates, name, at)
}

// waitSourceUp waits until the agent reports the source read successfully:
// the notice is set only once the agent watches.
func waitSourceUp(b *testing.B, a *agentproc.Agent, source string) {
	b.Helper()
	want := fmt.Sprintf(`lastcall_source_up{source=%q} 1`, source)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + a.Addr + "/metrics"); err == nil {
			s := bufio.NewScanner(resp.Body)
			for s.Scan() {
				if strings.TrimSpace(s.Text()) == want {
					resp.Body.Close()
					return
				}
			}
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("source %s never up", source)
}
