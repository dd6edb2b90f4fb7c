package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
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

// BenchmarkAgentIdle runs, at once and each on a node and metadata service
// of its own with no notice: the agent with its default settings; the agent
// keeping its start-up pages (--release-startup-pages=false); and the
// floor, a program with only a client-go clientset and the same two
// informers. It samples their memory once a second over idleWindow and
// reports the largest resident set seen. Each agent runs from its own copy
// of the binary, dropped from the page cache, in a memory cgroup of its
// own, so its working set can be read as the kubelet reads it.
func BenchmarkAgentIdle(b *testing.B) {
	for range b.N {
		type run struct {
			agent  *agentproc.Agent
			cg     *memcg
			sample idleSample
			ws     int64 // working set at the end
			usage  int64 // cgroup usage at the end, page cache included
		}
		var runs [2]*run
		var noCgroup string
		for i, extra := range [][]string{nil, {"LASTCALL_RELEASE_STARTUP_PAGES=false"}} {
			name := uniq("idle")
			addNode(b, name, nil)
			imds := startAEMM(b, spotAt(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2099, 1, 1, 0, 2, 0, 0, time.UTC)))
			b.Cleanup(imds.Stop)
			bin := coldCopy(b, lastcallBinary(b))
			cg, why := newMemcg(b, name)
			r := &run{cg: cg}
			cfg := agentproc.Config{Binary: bin, Node: name, Kubeconfig: env.Kubeconfig, IMDS: imds.URL(),
				LogPath: filepath.Join(env.Dir, "logs", "lastcall-"+name+".log"), Env: extra}
			if cg != nil {
				cfg.Cgroup = cg.dir
			} else {
				noCgroup = why
			}
			a, err := agentproc.Start(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { a.Stop() })
			r.agent, runs[i] = a, r
		}
		floorPID := startFloor(b, uniq("floor"))
		time.Sleep(idleWarmUp) // a measurement window, not a wait for a condition
		var wg sync.WaitGroup
		var floor idleSample
		for _, r := range runs {
			wg.Go(func() { r.sample = sampleIdle(b, r.agent.PID(), idleWindow) })
		}
		wg.Go(func() { floor = sampleIdle(b, floorPID, idleWindow) })
		wg.Wait()
		for _, r := range runs {
			if r.cg != nil {
				u, ws, err := r.cg.usage()
				if err != nil {
					b.Fatal(err)
				}
				r.usage, r.ws = u, ws
			}
		}
		def, kept := runs[0], runs[1]
		heap := scrapeGauge(b, "http://"+def.agent.Addr+"/metrics", "go_memstats_heap_inuse_bytes")
		b.ReportMetric(float64(def.sample.maxRSS)/(1<<20), "idle-rss-MiB")
		b.ReportMetric(float64(kept.sample.maxRSS)/(1<<20), "idle-rss-kept-MiB")
		b.ReportMetric(float64(floor.maxRSS)/(1<<20), "floor-rss-MiB")
		b.ReportMetric(def.sample.cpu*100, "idle-cpu-%")
		over := fmt.Sprintf("max over %s", idleWindow)
		results.add("agent idle RSS ("+over+", 4 signals polled every 250 ms; start-up pages released, the default)",
			mib(def.sample.maxRSS), "aws-node-termination-handler 48 MiB ("+fmt.Sprintf("%.2f×", float64(def.sample.maxRSS)/(48<<20))+")", "≤ 24 MiB")
		results.add("  of which anonymous (heap, stacks) / the binary's pages", mib(def.sample.split.anon)+" / "+mib(def.sample.split.file), "", "")
		results.add("agent idle RSS keeping its start-up pages (--release-startup-pages=false)", mib(kept.sample.maxRSS), "", "")
		results.add("  of which anonymous (heap, stacks) / the binary's pages", mib(kept.sample.split.anon)+" / "+mib(kept.sample.split.file), "", "")
		if def.cg != nil {
			results.add("agent working set as the kubelet counts it (cgroup usage less inactive file pages), default / keeping start-up pages",
				mib(def.ws)+" / "+mib(kept.ws), "", "")
			results.add("  cgroup usage, page cache of the binary included, default / keeping start-up pages", mib(def.usage)+" / "+mib(kept.usage), "", "")
		} else {
			results.add("agent working set as the kubelet counts it", "not measured: "+noCgroup, "", "")
		}
		results.add("Go heap in use, idle", mib(int64(heap)), "", "")
		results.add("floor: client-go clientset + the same 2 informers, nothing else ("+over+")", mib(floor.maxRSS), "", "")
		results.add("agent idle CPU", fmt.Sprintf("%.2f%% of a core", def.sample.cpu*100), "", "")
	}
}

// idleSample is what sampleIdle saw of a process.
type idleSample struct {
	maxRSS int64
	split  rssSplit // at the largest resident set
	cpu    float64  // cores used on average
}

// sampleIdle samples pid's memory once a second for window.
func sampleIdle(b *testing.B, pid int, window time.Duration) idleSample {
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
		st, err := agentproc.Status(pid)
		if err != nil {
			b.Error(err)
			return s
		}
		if st["VmRSS"] > s.maxRSS {
			s.maxRSS, s.split = st["VmRSS"], rssSplit{anon: st["RssAnon"], file: st["RssFile"]}
		}
	}
	cpu1, _ := agentproc.ProcessCPU(pid)
	s.cpu = float64(cpu1-cpu0) / float64(time.Since(start))
	return s
}

// startFloor builds and runs test/bench/floor on a node of its own, waits
// for its informers to sync and returns its PID; it is stopped at the end
// of the benchmark.
func startFloor(b *testing.B, node string) int {
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
	cmd := exec.Command(bin, env.Kubeconfig, node)
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

// rssSplit is a process's resident memory by kind.
type rssSplit struct{ anon, file int64 }

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
