package bench

import (
	"context"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// BenchmarkNoticeToCordon measures, over 20 runs, the time from a spot
// notice appearing in instance metadata to the node being cordoned, as seen
// by a watch on the node. Each run has a new node, metadata service and
// agent, so the agent's poll phase against the notice is random, as in life.
func BenchmarkNoticeToCordon(b *testing.B) {
	const runs = 20
	var lat []time.Duration
	lastcallBinary(b)
	for range b.N {
		for range runs {
			lat = append(lat, noticeToCordonOnce(b))
		}
	}
	med, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	b.ReportMetric(med.Seconds(), "median-s")
	b.ReportMetric(p99.Seconds(), "p99-s")
	b.Logf("notice to cordon over %d runs: %v", len(lat), lat)
	results.add("notice → cordon, median of 20 (spot, IMDS)", secs(med), "1.92 s (aws-node-termination-handler)", "≤ 0.3 s")
	results.add("notice → cordon, p99 of 20", secs(p99), "", "")
}

func noticeToCordonOnce(b *testing.B) time.Duration {
	b.Helper()
	name := uniq("lat")
	addNode(b, name, nil)
	trigger := aemm.TriggerAfter(1500 * time.Millisecond)
	imds := startAEMM(b, spotAt(trigger, trigger.Add(2*time.Minute)))
	defer imds.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	updates := watchNode(b, ctx, name)
	a := startAgent(b, name, imds.URL())
	defer a.Stop()
	if time.Now().After(trigger) {
		b.Fatalf("the agent took until after the notice to start; widen the trigger margin")
	}
	for u := range updates {
		if u.obj.Spec.Unschedulable {
			if u.at.Before(trigger) {
				b.Fatalf("cordoned before the notice appeared")
			}
			return u.at.Sub(trigger)
		}
	}
	b.Fatalf("node %s never cordoned: %v", name, ctx.Err())
	return 0
}
