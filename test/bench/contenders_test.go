package bench

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/anchors/nth"
	"github.com/lastcall/lastcall/test/emulators/child"
)

// lastcallSpotTaint is the taint lastcall puts on a node for a spot
// interruption notice (README, "What a drain does").
const lastcallSpotTaint = "lastcall.io/spot-interruption"

// nthName names aws-node-termination-handler in the table.
const nthName = "aws-node-termination-handler"

// process is a running agent of either kind.
type process interface {
	PID() int
	Stop() error
}

// contender is a program the benchmarks run on a node: lastcall, or
// aws-node-termination-handler beside it. Both are measured the same way.
type contender struct {
	name string
	// spotTaint is the taint it puts on a node for a spot notice: a node
	// cordoned and carrying it is held for that notice.
	spotTaint string
	// start runs it for node against the metadata service at imds, in the
	// memory cgroup cg from a cold copy of its binary if cg is not nil.
	start func(b *testing.B, node, imds string, cg *memcg) process
	// done delivers the moment it reports its drain of node done. Called
	// before the notice.
	done func(b *testing.B, ctx context.Context, p process, node string) <-chan time.Time
}

var (
	lastcallRun = contender{name: "lastcall", spotTaint: lastcallSpotTaint, start: startLastcall, done: lastcallDone}
	nthRun      = contender{name: nthName, spotTaint: nth.SpotTaint, start: startNTH, done: nthDone}
)

func startLastcall(b *testing.B, node, imds string, cg *memcg) process {
	b.Helper()
	return startLastcallWith(b, node, imds, cg, nil)
}

// startLastcallWith is startLastcall with settings (LASTCALL_*).
func startLastcallWith(b *testing.B, node, imds string, cg *memcg, settings []string) process {
	b.Helper()
	cfg := agentproc.Config{Binary: lastcallBinary(b), Node: node, Kubeconfig: env.Kubeconfig, IMDS: imds,
		LogPath: filepath.Join(env.Dir, "logs", "lastcall-"+node+".log"), Env: settings}
	if cg != nil {
		cfg.Binary, cfg.Cgroup = coldCopy(b, cfg.Binary), cg.dir
	}
	a, err := agentproc.Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// lastcallDone follows lastcall's log for the line it writes once its
// drain is done ("drain finished", at the moment it records the
// DrainCompleted Event): the same kind of report as
// aws-node-termination-handler's.
func lastcallDone(b *testing.B, ctx context.Context, p process, _ string) <-chan time.Time {
	b.Helper()
	return logLine(ctx, p.(*agentproc.Agent).LogPath, `msg="drain finished"`)
}

// drainCompletedEvent watches for the DrainCompleted Event lastcall records
// on the node when its drain is done, and delivers when a watch sees it.
func drainCompletedEvent(b *testing.B, ctx context.Context, node string) <-chan time.Time {
	b.Helper()
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": node, "reason": "DrainCompleted"}.String()
	w, err := env.Client.CoreV1().Events("").Watch(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan time.Time, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if _, ok := ev.Object.(*corev1.Event); ok {
				out <- time.Now()
				return
			}
		}
	}()
	return out
}

// logLine delivers the moment a line containing s is read from the log at
// path, which is followed every few milliseconds.
func logLine(ctx context.Context, path, s string) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		if at, err := child.WaitLine(ctx, path, s); err == nil {
			out <- at
		}
	}()
	return out
}

var (
	nthOnce  sync.Once
	nthBin   string
	nthCreds nth.Credentials
	nthErr   error
)

// nthSetup builds aws-node-termination-handler if the cache lacks it
// (about 3 minutes cold) and grants it its chart's permissions, once per
// run, before any clock starts. It fails loudly where it cannot run (not
// root, no unshare).
func nthSetup(b *testing.B) (string, nth.Credentials) {
	b.Helper()
	nthOnce.Do(func() {
		if nthErr = nth.Preflight(); nthErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		if nthBin, nthErr = nth.Binary(ctx); nthErr != nil {
			return
		}
		nthCreds, nthErr = nth.Grant(ctx, env.Client, env.Config)
	})
	if nthErr != nil {
		b.Fatalf("aws-node-termination-handler cannot run beside lastcall: %v", nthErr)
	}
	return nthBin, nthCreds
}

func startNTH(b *testing.B, node, imds string, cg *memcg) process {
	b.Helper()
	bin, creds := nthSetup(b)
	cfg := nth.Config{Binary: bin, Node: node, IMDS: imds, Credentials: creds,
		LogPath: filepath.Join(env.Dir, "logs", "nth-"+node+".log")}
	if cg != nil {
		cfg.Binary, cfg.Cgroup = coldCopy(b, bin), cg.dir
	}
	h, err := nth.Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// nthDone follows aws-node-termination-handler's log for the line it writes
// once the node is drained: with Kubernetes Events off, as its chart has
// them, that is its only report.
func nthDone(b *testing.B, ctx context.Context, p process, _ string) <-chan time.Time {
	b.Helper()
	return logLine(ctx, p.(*nth.Handler).LogPath, nth.DoneLine)
}

// memcgFor makes a memory cgroup for an agent, or fails: the benchmarks
// that read memory need one.
func memcgFor(b *testing.B, name string) *memcg {
	b.Helper()
	cg, why := newMemcg(b, name)
	if cg == nil {
		b.Fatalf("memory cgroup for %s: %s", name, why)
	}
	return cg
}
