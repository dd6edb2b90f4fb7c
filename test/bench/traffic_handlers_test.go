package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/gcemeta"
)

// armLastcallGCE runs lastcall's agent for node against a GCE metadata
// fake, ready to flip the preemption flag, and follows its log for its
// drain's end.
func armLastcallGCE(b *testing.B, ctx context.Context, node string) notice {
	return armLastcallGCEWith()(b, ctx, node)
}

// armLastcallGCEWith is armLastcallGCE with extra settings (LASTCALL_*).
func armLastcallGCEWith(extra ...string) func(*testing.B, context.Context, string) notice {
	return func(b *testing.B, ctx context.Context, node string) notice {
		return armGCE(b, ctx, node, extra)
	}
}

func armGCE(b *testing.B, ctx context.Context, node string, extra []string) notice {
	b.Helper()
	g, err := gcemeta.Start()
	if err != nil {
		b.Fatal(err)
	}
	a := startAgentEnv(b, node, "", append([]string{"LASTCALL_CLOUD=gce", "GCE_METADATA_HOST=" + g.Host()}, extra...)...)
	waitSourceUp(b, a, "gce-preempted")
	return notice{
		deliver: func() { g.Set("instance/preempted", "TRUE") },
		drained: logLine(ctx, a.LogPath, `msg="drain finished"`),
		stop:    func() { a.Stop(); g.Close() },
	}
}

// startKeeper runs a lastcall agent for node against a GCE metadata fake
// that never tells of a preemption: it only keeps the serving gate of the
// node's pods. It returns how to stop it.
func startKeeper(b *testing.B, node string) func() {
	b.Helper()
	g, err := gcemeta.Start()
	if err != nil {
		b.Fatal(err)
	}
	a := startAgentEnv(b, node, "", "LASTCALL_CLOUD=gce", "GCE_METADATA_HOST="+g.Host())
	return func() { a.Stop(); g.Close() }
}

// kubectlTimeout bounds `kubectl drain` inside the GCE window.
const kubectlTimeout = 25 * time.Second

// armKubectl runs `kubectl drain` on node at the notice, as an operator's
// hook would, with a timeout inside the window.
func armKubectl(b *testing.B, ctx context.Context, node string) notice {
	b.Helper()
	drained := make(chan time.Time, 1)
	var wg sync.WaitGroup
	deliver := func() {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, kubectlTimeout+10*time.Second)
			defer cancel()
			cmd := env.KubectlCommand(ctx, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
				fmt.Sprintf("--timeout=%s", kubectlTimeout))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Logf("kubectl drain: %v\n%s", err, out)
				return
			}
			drained <- time.Now()
		})
	}
	return notice{deliver: deliver, drained: drained, stop: wg.Wait}
}

// armSpot starts AEMM with a spot notice due once the contender has
// started and the load has run, and the contender for node against it.
func armSpot(c contender) func(*testing.B, context.Context, string) notice {
	return func(b *testing.B, ctx context.Context, node string) notice {
		b.Helper()
		trigger := aemm.TriggerAfter(noticeLead + trafficBefore)
		imds := startAEMM(b, spotNotice(trigger))
		p := c.start(b, node, imds.URL(), nil)
		return notice{at: trigger, drained: c.done(b, ctx, p, node), stop: func() { p.Stop(); imds.Stop() }}
	}
}
