package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/agentproc"
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
		var split rssSplit
		for range 10 {
			time.Sleep(time.Second)
			rss, _, err := a.Memory()
			if err != nil {
				b.Fatal(err)
			}
			if rss > maxRSS {
				maxRSS = rss
				split = readRSSSplit(b, a.PID())
			}
		}
		heap := scrapeGauge(b, "http://"+a.Addr+"/metrics", "go_memstats_heap_inuse_bytes")
		cpu1, _ := a.CPUTime()
		cpu := float64(cpu1-cpu0) / float64(time.Since(start))
		a.Stop()
		imds.Stop()
		floor := floorRSS(b, name)
		b.ReportMetric(float64(maxRSS)/(1<<20), "idle-rss-MiB")
		b.ReportMetric(float64(floor)/(1<<20), "floor-rss-MiB")
		b.ReportMetric(cpu*100, "idle-cpu-%")
		results.add("agent idle RSS (max over 10 s, 4 signals polled every 250 ms)", mib(maxRSS), "48 MiB (aws-node-termination-handler)", "≤ 24 MiB")
		results.add("  of which anonymous (heap, stacks) / the binary's pages", mib(split.anon)+" / "+mib(split.file), "", "")
		results.add("  Go heap in use", mib(int64(heap)), "", "")
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

// rssSplit is a process's resident memory by kind.
type rssSplit struct{ anon, file int64 }

func readRSSSplit(b *testing.B, pid int) rssSplit {
	b.Helper()
	st, err := agentproc.Status(pid)
	if err != nil {
		b.Fatal(err)
	}
	return rssSplit{anon: st["RssAnon"], file: st["RssFile"]}
}

// scrapeGauge reads one unlabelled sample from a /metrics page.
func scrapeGauge(b *testing.B, url, name string) float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("%s not on %s", name, url)
	return 0
}

// BenchmarkBinarySize reports the size of the binary as shipped (linux,
// CGO off, -trimpath, -s -w), for this machine's architecture and for the
// other one the image is built for. The image adds the distroless static
// base to it; it is not built here (no container engine).
func BenchmarkBinarySize(b *testing.B) {
	root, err := tools.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		var sizes []string
		for _, arch := range []string{"amd64", "arm64"} {
			out := filepath.Join(b.TempDir(), "lastcall-"+arch)
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/lastcall")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("building for %s: %v\n%s", arch, err, msg)
			}
			fi, err := os.Stat(out)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), arch+"-MiB")
			sizes = append(sizes, fmt.Sprintf("%s %s", arch, mib(fi.Size())))
		}
		results.add("binary size (linux, stripped)", strings.Join(sizes, ", "), "", "")
	}
}
