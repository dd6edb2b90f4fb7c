// Package bench measures lastcall against its anchors on a real local
// control plane and the real amazon-ec2-metadata-mock, with lastcall run as
// a process of its own with its default settings, and
// aws-node-termination-handler v1.25.6 (test/anchors/nth) and
// `kubectl drain` run beside it in the same run, on the same cluster and
// the same emulator. Run it with
//
//	make bench    (go test -run '^$' -bench . -benchtime 1x ./test/bench/)
//
// as root: aws-node-termination-handler runs in a mount namespace of its
// own, and every agent in a memory cgroup of its own. Each benchmark takes
// its samples itself; -benchtime 1x runs each once. The table of results,
// every anchor figure from the same run, is printed at the end.
package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/cluster"
)

var (
	env     *cluster.Cluster
	results table

	buildOnce sync.Once
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // no benchmark asked for: no cluster needed
	}
	code := cluster.Main(m, &env)
	results.print(os.Stdout)
	os.Exit(code)
}

// lastcallBinary builds the shipped binary once per run.
func lastcallBinary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lastcall-bench-")
		if err != nil {
			buildErr = err
			return
		}
		binary, buildErr = agentproc.Build(context.Background(), dir)
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binary
}

// row is one line of the results table: lastcall's figure, an anchor's
// from the same run, how many times lastcall's the anchor's is, and the
// target with whether it was met.
type row struct {
	what, lastcall, anchor, ratio, target string
}

type table struct {
	mu   sync.Mutex
	rows []row
}

// add adds a row without a ratio.
func (t *table) add(what, lastcall, anchor, target string) {
	t.compare(what, lastcall, anchor, "", target)
}

// compare adds a row with the anchor's figure over lastcall's.
func (t *table) compare(what, lastcall, anchor, ratio, target string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows = append(t.rows, row{what, lastcall, anchor, ratio, target})
}

func (t *table) print(w *os.File) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Machine:", machine())
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| measure | lastcall | anchor, same run | anchor / lastcall | target |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.what, r.lastcall, r.anchor, r.ratio, r.target)
	}
}

// machine describes where the benchmarks ran: CPU model and count, memory,
// kernel and Go.
func machine() string {
	model, cpus := "unknown CPU", 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			switch strings.TrimSpace(k) {
			case "model name":
				model = strings.TrimSpace(v)
			case "processor":
				cpus++
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs, %s memory, Linux %s, %s %s/%s", model, cpus, mem,
		strings.TrimSpace(string(kernel)), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
