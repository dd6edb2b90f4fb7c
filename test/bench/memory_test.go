package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/tools"
)

// BenchmarkAgentIdle runs the agent with its default settings against a
// metadata service with no notice and samples its memory and CPU once a
// second for 10 s after a 3 s warm-up. Beside it, the same for the floor: a
// program with only a client-go clientset and the same two informers.
func BenchmarkAgentIdle(b *testing.B) {
	for range b.N {
		name := uniq("idle")
		addNode(b, name, nil)
		imds := startAEMM(b, spotAt(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2099, 1, 1, 0, 2, 0, 0, time.UTC)))
		a := startAgent(b, name, imds.URL())
		time.Sleep(3 * time.Second) // warm-up: a measurement window, not a wait for a condition
		cpu0, err := a.CPUTime()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var maxRSS int64
		for range 10 {
			time.Sleep(time.Second)
			rss, _, err := a.Memory()
			if err != nil {
				b.Fatal(err)
			}
			maxRSS = max(maxRSS, rss)
		}
		cpu1, _ := a.CPUTime()
		cpu := float64(cpu1-cpu0) / float64(time.Since(start))
		a.Stop()
		imds.Stop()
		floor := floorRSS(b, name)
		b.ReportMetric(float64(maxRSS)/(1<<20), "idle-rss-MiB")
		b.ReportMetric(float64(floor)/(1<<20), "floor-rss-MiB")
		b.ReportMetric(cpu*100, "idle-cpu-%")
		results.add("agent idle RSS (max over 10 s, 4 signals polled every 250 ms)", mib(maxRSS), "48 MiB (aws-node-termination-handler)", "≤ 24 MiB")
		results.add("floor: client-go clientset + the same 2 informers, nothing else", mib(floor), "", "")
		results.add("agent idle CPU", fmt.Sprintf("%.2f%% of a core", cpu*100), "", "")
	}
}

// floorRSS builds and runs test/bench/floor for node and returns its RSS
// after the same warm-up.
func floorRSS(b *testing.B, node string) int64 {
	b.Helper()
	root, err := tools.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(lastcallBinary(b)), "floor")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./test/bench/floor")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the floor: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, env.Kubeconfig, node)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "synced" {
		b.Fatalf("floor did not sync: %q %v", line, err)
	}
	time.Sleep(13 * time.Second) // the agent's warm-up plus sampling window
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
