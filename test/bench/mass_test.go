package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

// BenchmarkMassInterruption: a spot reclaim of N nodes (20, then 200; or
// only $LASTCALL_BENCH_MASS), their N notices sent to the queue at once,
// in batches of ten, with a pod on each node. The queue processor (its
// binary, --workers above N) holds every node before it evicts a pod from
// any. It measures the time from the first notice sent to the last node
// held, and checks that no pod was evicted before then.
func BenchmarkMassInterruption(b *testing.B) {
	for _, n := range sizes("LASTCALL_BENCH_MASS", 20, 200) {
		b.Run(fmt.Sprintf("notices=%d", n), func(b *testing.B) {
			for range b.N {
				massInterruption(b, n)
			}
		})
	}
}

func massInterruption(b *testing.B, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := lastcallBinary(b)
	m, err := moto.Start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	cfg := moto.Config(m.URL())
	pool := uniq("mass")
	ids, ns, url := fleet(b, cfg, pool, n, 1, map[string]string{"bench-mass": pool})
	q := sqs.NewFromConfig(cfg)

	// When each node was first seen held, and the first pod seen going.
	var mu sync.Mutex
	held := map[string]time.Time{}
	var firstEviction time.Time
	nodes, err := env.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{LabelSelector: "bench-mass=" + pool})
	if err != nil {
		b.Fatal(err)
	}
	defer nodes.Stop()
	pods, err := env.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer pods.Stop()
	allHeld := make(chan struct{})
	go func() {
		for ev := range nodes.ResultChan() {
			nd, ok := ev.Object.(*corev1.Node)
			if !ok || !nd.Spec.Unschedulable {
				continue
			}
			mu.Lock()
			if _, seen := held[nd.Name]; !seen {
				held[nd.Name] = time.Now()
				if len(held) == n {
					close(allHeld)
				}
			}
			mu.Unlock()
		}
	}()
	go func() {
		for ev := range pods.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || (p.DeletionTimestamp == nil && ev.Type != watch.Deleted) {
				continue
			}
			mu.Lock()
			if firstEviction.IsZero() {
				firstEviction = time.Now()
			}
			mu.Unlock()
		}
	}()

	p, err := agentproc.Start(ctx, agentproc.Config{Binary: bin, Kubeconfig: env.Kubeconfig,
		LogPath: filepath.Join(env.Dir, "logs", fmt.Sprintf("lastcall-mass-%d.log", n)),
		Env: []string{"LASTCALL_MODE=queue", "LASTCALL_QUEUE_URL=" + url, "LASTCALL_REGION=" + moto.Region,
			"LASTCALL_AWS_ENDPOINT=" + m.URL(), "LASTCALL_POD_NAME=bench", "LASTCALL_POD_NAMESPACE=default",
			"LASTCALL_WORKERS=" + strconv.Itoa(n+50), "LASTCALL_LOG_LEVEL=warn", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test"}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop() // Start returned once its /readyz answered

	start := time.Now()
	for i := 0; i < len(ids); i += 10 {
		var entries []sqstypes.SendMessageBatchRequestEntry
		for j, id := range ids[i:min(i+10, len(ids))] {
			body := fmt.Sprintf(`{"version":"0","id":"spot-%s","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",`+
				`"account":"123456789012","time":%q,"region":%q,"resources":["arn:aws:ec2:%s:123456789012:instance/%s"],`+
				`"detail":{"instance-id":%q,"instance-action":"terminate"}}`,
				id, time.Now().UTC().Format(time.RFC3339), moto.Region, moto.Region, id, id)
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(body)})
		}
		if _, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-allHeld:
	case <-ctx.Done():
		mu.Lock()
		b.Fatalf("%d of %d nodes held in 10 minutes", len(held), n)
	}
	mu.Lock()
	defer mu.Unlock()
	var last time.Time
	for _, at := range held {
		if at.After(last) {
			last = at
		}
	}
	took := last.Sub(start)
	b.ReportMetric(took.Seconds(), "to-last-held-s")
	early := "none"
	if !firstEviction.IsZero() && firstEviction.Before(last) {
		early = fmt.Sprintf("the first, %s before the last hold", last.Sub(firstEviction).Round(time.Millisecond))
		b.Errorf("a pod was evicted %s before the last node was held", last.Sub(firstEviction))
	}
	results.add(fmt.Sprintf("queue: %d spot notices at once → last node held (evictions before it: %s)", n, early), secs(took), "", "")
}
