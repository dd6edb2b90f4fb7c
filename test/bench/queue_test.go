package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// BenchmarkQueueTerminateHooks: N kwok nodes (100, then 500; or only
// $LASTCALL_BENCH_NODES) with 10 pods each, every one with a terminate
// lifecycle hook at once; the queue processor, its binary with default
// settings, drains them all. It measures the time from the processor's
// start to the last CompleteLifecycleAction, the Kubernetes API request
// rate it reached, and its memory. Each size's nodes are deleted after it.
func BenchmarkQueueTerminateHooks(b *testing.B) {
	for _, n := range sizes("LASTCALL_BENCH_NODES", 100, 500) {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for range b.N {
				queueHooks(b, n)
			}
		})
	}
}

func queueHooks(b *testing.B, nodes int) {
	const podsPerNode = 10
	ctx := context.Background()
	bin := lastcallBinary(b)
	m, err := moto.Start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	proxy := moto.NewLifecycleProxy(m.URL())
	if err := proxy.Start(); err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	cfg := moto.Config(proxy.URL())

	setup := time.Now()
	group := fmt.Sprintf("bench-%d", time.Now().Unix())
	ids, _, url := fleet(b, cfg, group, nodes, podsPerNode, nil)
	q := sqs.NewFromConfig(cfg)
	for i := 0; i < len(ids); i += 10 {
		var entries []sqstypes.SendMessageBatchRequestEntry
		for j, id := range ids[i:min(i+10, len(ids))] {
			body := terminateHook(proxy, group, id)
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(body)})
		}
		if _, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("setup of %d nodes, %d pods and %d messages took %s", nodes, nodes*podsPerNode, nodes, time.Since(setup).Round(time.Second))

	components := []string{cluster.APIServer, cluster.Etcd, cluster.Kwok, cluster.ControllerManager, cluster.Scheduler}
	cpuBefore := cpuTimes(components)
	cg := memcgFor(b, uniq("queue"))
	bin = coldCopy(b, bin)
	start := time.Now()
	p, err := agentproc.Start(ctx, agentproc.Config{Binary: bin, Kubeconfig: env.Kubeconfig, Cgroup: cg.dir,
		LogPath: filepath.Join(env.Dir, "logs", "lastcall-queue.log"),
		Env: []string{"LASTCALL_MODE=queue", "LASTCALL_QUEUE_URL=" + url, "LASTCALL_REGION=" + moto.Region,
			"LASTCALL_AWS_ENDPOINT=" + proxy.URL(), "LASTCALL_POD_NAME=bench", "LASTCALL_POD_NAMESPACE=default",
			"LASTCALL_LOG_LEVEL=warn", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test"}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	deadline := time.Now().Add(10 * time.Minute)
	var last time.Time
	for {
		done := 0
		for _, id := range ids {
			if c, ok := proxy.Completion(id); ok {
				done++
				if c.At.After(last) {
					last = c.At
				}
			}
		}
		if done == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d lifecycle actions completed in 10 minutes", done, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := last.Sub(start)
	cpuAfter := cpuTimes(components)
	requests := scrapeSum(b, p.Addr, "lastcall_kube_requests_total")
	throttled := scrapeSum(b, p.Addr, `lastcall_kube_requests_total{code="429"`)
	peak, err := cg.peak()
	if err != nil {
		b.Fatal(err)
	}
	cpu, _ := p.CPUTime()
	rate := requests / took.Seconds()
	b.ReportMetric(took.Seconds(), "to-last-complete-s")
	b.ReportMetric(rate, "kube-req/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
	results.add(fmt.Sprintf("queue: %d terminate hooks (%d pods) at once → last CompleteLifecycleAction", nodes, nodes*podsPerNode),
		secs(took), "", "")
	results.add(fmt.Sprintf("  %d hooks: Kubernetes API requests, rate over that time", nodes), fmt.Sprintf("%.0f requests, %.0f/s", requests, rate), "", "")
	results.add(fmt.Sprintf("  %d hooks: processor peak cgroup usage (page cache included), CPU time", nodes), fmt.Sprintf("%s, %.1f s CPU", mib(peak), cpu.Seconds()), "", "")
	results.add(fmt.Sprintf("  %d hooks: requests answered 429 by API Priority and Fairness", nodes), fmt.Sprintf("%.0f", throttled), "", "")
	var used []string
	total := cpu.Seconds()
	for _, c := range components {
		d := (cpuAfter[c] - cpuBefore[c]).Seconds()
		total += d
		used = append(used, fmt.Sprintf("%s %.1f s", c, d))
	}
	results.add(fmt.Sprintf("  %d hooks: CPU used over that time (2 cores)", nodes), fmt.Sprintf("%s; lastcall %.1f s; %.0f%% of the machine",
		strings.Join(used, ", "), cpu.Seconds(), 100*total/(2*took.Seconds())), "", "")
}

// sizes are the sizes a benchmark runs: defaults, or only the one the
// environment variable name gives.
func sizes(name string, defaults ...int) []int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return []int{v}
	}
	return defaults
}

// fleet makes an Auto Scaling group of n instances in moto (through cfg),
// a kwok node for each (named ip-<instance>, with its provider ID and
// labels) running podsPerNode pods of a namespace of their own, and an SQS
// queue, and waits for the pods to be Ready. The nodes and the namespace
// are deleted when the benchmark ends, so the next size runs without them.
func fleet(b *testing.B, cfg aws.Config, group string, n, podsPerNode int, labels map[string]string) (ids []string, ns, queueURL string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ids, err := moto.CreateGroup(ctx, cfg, moto.Group{Name: group, Size: int32(n)})
	if err != nil {
		b.Fatal(err)
	}
	if ns, err = env.CreateNamespace(ctx, "bench-fleet-"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx := context.Background()
		_ = env.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		parallel(b, 25, ids, func(id string) error {
			_ = env.Client.CoreV1().Nodes().Delete(ctx, "ip-"+id, metav1.DeleteOptions{})
			return nil
		})
	})
	parallel(b, 25, ids, func(id string) error {
		if _, err := env.AddNode(ctx, "ip-"+id, cluster.WithLabels(labels), cluster.WithProviderID("aws:///"+moto.Region+"a/"+id)); err != nil {
			return err
		}
		grace := int64(0)
		for i := range podsPerNode {
			_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%s-%d", id, i)},
				Spec: corev1.PodSpec{NodeName: "ip-" + id, TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "c", Image: "registry.example/c:1"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := env.WaitPodsReady(ctx, ns, "", n*podsPerNode); err != nil {
		b.Fatal(err)
	}
	name := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	qo, err := sqs.NewFromConfig(cfg).CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name})
	if err != nil {
		b.Fatal(err)
	}
	return ids, ns, aws.ToString(qo.QueueUrl)
}

// terminateHook registers a terminate lifecycle action of instance id in
// group with the lifecycle proxy, and renders the EventBridge event that
// tells of it, as SQS receives it.
func terminateHook(proxy *moto.LifecycleProxy, group, id string) string {
	token := proxy.Register(moto.LifecycleActionState{GroupName: group, HookName: "drain", InstanceID: id})
	body, _ := json.Marshal(map[string]any{
		"version": "0", "id": "ev-" + id, "detail-type": "EC2 Instance-terminate Lifecycle Action", "source": "aws.autoscaling",
		"account": "123456789012", "time": time.Now().UTC().Format(time.RFC3339), "region": moto.Region, "resources": []string{},
		"detail": map[string]string{"LifecycleActionToken": token, "AutoScalingGroupName": group, "LifecycleHookName": "drain",
			"EC2InstanceId": id, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"},
	})
	return string(body)
}

// cpuTimes reads the CPU time each control-plane component has used.
func cpuTimes(components []string) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, c := range components {
		if pid := env.PID(c); pid > 0 {
			out[c], _ = agentproc.ProcessCPU(pid)
		}
	}
	return out
}

// parallel runs fn over items with n at a time and fails on the first error.
func parallel(b *testing.B, n int, items []string, fn func(string) error) {
	b.Helper()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				once.Do(func() { first = err })
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// scrapeSum sums every series of a counter on a /metrics endpoint.
func scrapeSum(b *testing.B, addr, name string) float64 {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") || (strings.Contains(name, "{") && strings.HasPrefix(l, name)) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}
