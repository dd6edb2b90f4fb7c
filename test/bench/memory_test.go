package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/tools"
)

// idleWindow is how long idle memory and CPU are sampled, after a warm-up
// of idleWarmUp: long enough to take in what an idle agent does now and
// then (drainability re-evaluated every 30 s, the Go runtime's forced
// collection every 2 min), not only what it does in its first seconds.
const (
	idleWarmUp = 3 * time.Second
	idleWindow = 3 * time.Minute
)

// BenchmarkIdle runs, at once and each on a node and AEMM of its own with
// no notice: lastcall with its default settings; aws-node-termination-handler
// as its users run it; and the floor, a program with only a client-go
// clientset and the same two informers as lastcall. Each runs from its own
// copy of its binary, dropped from the page cache, in a memory cgroup of
// its own, where its memory is read as the kubelet reads a container's.
// Over idleWindow it samples each one's working set once a second and
// reports the largest, then the cgroup's peak usage since the start, and
// the CPU each used over the window.
func BenchmarkIdle(b *testing.B) {
	lastcallBinary(b)
	nthSetup(b)
	for range b.N {
		type run struct {
			p      process
			cg     *memcg
			sample idleSample
			peak   int64
		}
		var runs []*run
		for _, c := range []contender{lastcallRun, nthRun} {
			name := uniq("idle")
			addNode(b, name, nil)
			imds := startAEMM(b, noNotice())
			b.Cleanup(imds.Stop)
			cg := memcgFor(b, name)
			p := c.start(b, name, imds.URL(), cg)
			b.Cleanup(func() { p.Stop() })
			runs = append(runs, &run{p: p, cg: cg})
		}
		floorNode := uniq("floor")
		floor := &run{cg: memcgFor(b, floorNode)}
		floorPID := startFloor(b, floorNode, floor.cg)
		time.Sleep(idleWarmUp) // a measurement window, not a wait for a condition
		var wg sync.WaitGroup
		for _, r := range runs {
			wg.Go(func() { r.sample = sampleIdle(b, r.p.PID(), r.cg, idleWindow) })
		}
		wg.Go(func() { floor.sample = sampleIdle(b, floorPID, floor.cg, idleWindow) })
		wg.Wait()
		for _, r := range append(runs, floor) {
			peak, err := r.cg.peak()
			if err != nil {
				b.Fatal(err)
			}
			r.peak = peak
		}
		lc, nt := runs[0], runs[1]
		heap := scrapeGauge(b, "http://"+lc.p.(*agentproc.Agent).Addr+"/metrics", "go_memstats_heap_inuse_bytes")
		b.ReportMetric(float64(lc.sample.maxWS)/(1<<20), "idle-ws-MiB")
		b.ReportMetric(float64(nt.sample.maxWS)/(1<<20), "nth-idle-ws-MiB")
		b.ReportMetric(float64(lc.peak)/(1<<20), "peak-MiB")
		b.ReportMetric(float64(nt.peak)/(1<<20), "nth-peak-MiB")
		b.ReportMetric(lc.sample.cpu*100, "idle-cpu-%")
		b.ReportMetric(nt.sample.cpu*100, "nth-idle-cpu-%")
		over := fmt.Sprintf("max over %s", idleWindow)
		ws := float64(lc.sample.maxWS) / float64(nt.sample.maxWS)
		results.compare("idle working set ("+over+"; cgroup usage less inactive file pages, as the kubelet counts it)",
			mib(lc.sample.maxWS), nthName+": "+mib(nt.sample.maxWS), times(float64(nt.sample.maxWS), float64(lc.sample.maxWS)),
			"≤ 1/2 of "+nthName+"'s "+check(ws <= 0.5))
		results.compare("peak cgroup usage over start-up and idle (memory.max_usage_in_bytes, page cache included)",
			mib(lc.peak), nthName+": "+mib(nt.peak), times(float64(nt.peak), float64(lc.peak)), "")
		results.compare("  cgroup usage at the end of the window, page cache included",
			mib(lc.sample.usage), nthName+": "+mib(nt.sample.usage), times(float64(nt.sample.usage), float64(lc.sample.usage)), "")
		results.compare("idle CPU over "+idleWindow.String()+" (lastcall polls 4 paths every 250 ms; "+nthName+" its spot path every 2 s)",
			fmt.Sprintf("%.2f%% of a core", lc.sample.cpu*100), fmt.Sprintf("%s: %.2f%% of a core", nthName, nt.sample.cpu*100),
			times(nt.sample.cpu, lc.sample.cpu), "")
		results.add("Go heap in use, idle", mib(int64(heap)), "", "")
		results.add("floor: client-go clientset + lastcall's 2 informers, nothing else: idle working set ("+over+")", mib(floor.sample.maxWS), "", "")
	}
}

// idleSample is what sampleIdle saw of a process and its cgroup.
type idleSample struct {
	maxWS int64   // largest working set
	usage int64   // cgroup usage at the end, page cache included
	cpu   float64 // cores used on average
}

// sampleIdle samples the working set of cg, which holds pid, once a second
// for window, and pid's CPU time over it.
func sampleIdle(b *testing.B, pid int, cg *memcg, window time.Duration) idleSample {
	b.Helper()
	var s idleSample
	cpu0, err := agentproc.ProcessCPU(pid)
	if err != nil {
		b.Error(err)
		return s
	}
	start := time.Now()
	for time.Since(start) < window {
		time.Sleep(time.Second)
		usage, ws, err := cg.usage()
		if err != nil {
			b.Error(err)
			return s
		}
		s.maxWS, s.usage = max(s.maxWS, ws), usage
	}
	cpu1, _ := agentproc.ProcessCPU(pid)
	s.cpu = float64(cpu1-cpu0) / float64(time.Since(start))
	return s
}

// startFloor builds and runs test/bench/floor on a node of its own, in the
// memory cgroup cg from a cold copy of its binary, waits for its informers
// to sync and returns its PID; it is stopped at the end of the benchmark.
func startFloor(b *testing.B, node string, cg *memcg) int {
	b.Helper()
	addNode(b, node, nil)
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
	// The shell joins the cgroup, then becomes the floor (same PID).
	cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cg.dir, coldCopy(b, bin), env.Kubeconfig, node)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "synced" {
		b.Fatalf("floor did not sync: %q %v", line, err)
	}
	return cmd.Process.Pid
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
// other one the image is built for, and the size of the image layer that
// the Dockerfile's COPY makes of it: a gzipped tar holding /lastcall, as
// a registry stores it. The image is that layer on the distroless static
// base, which is not pulled here (no container engine, no registry).
func BenchmarkBinarySize(b *testing.B) {
	root, err := tools.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		var sizes, layers []string
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
			layer := layerSize(b, out)
			b.ReportMetric(float64(layer)/(1<<20), arch+"-layer-MiB")
			layers = append(layers, fmt.Sprintf("%s %s", arch, mib(layer)))
		}
		results.add("binary size (linux, stripped)", strings.Join(sizes, ", "), "", "")
		results.add("image layer lastcall adds to gcr.io/distroless/static:nonroot (the binary as /lastcall, tar.gz)", strings.Join(layers, ", "), "", "")
		// The kubectl plugin, where operators run it; the daemon links
		// none of its kubectl and cli-runtime code.
		var plugin []string
		for _, p := range []string{"linux/amd64", "darwin/arm64", "windows/amd64"} {
			goos, arch, _ := strings.Cut(p, "/")
			out := filepath.Join(b.TempDir(), "kubectl-lastcall")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/kubectl-lastcall")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+arch)
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("building the plugin for %s: %v\n%s", p, err, msg)
			}
			fi, err := os.Stat(out)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), "plugin-"+goos+"-"+arch+"-MiB")
			plugin = append(plugin, fmt.Sprintf("%s %s", p, mib(fi.Size())))
		}
		results.add("kubectl plugin binary size (kubectl-lastcall, stripped)", strings.Join(plugin, ", "), "", "")
	}
}

// layerSize returns the size of a gzipped tar holding bin as /lastcall,
// owned by root with mode 0755, as an image layer stores it.
func layerSize(b *testing.B, bin string) int64 {
	b.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "lastcall", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		b.Fatal(err)
	}
	return int64(buf.Len())
}
