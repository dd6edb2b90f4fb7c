package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/emulators/moto"

	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/gcemeta"
)

// armLastcallGCE runs lastcall's agent for node against a GCE metadata
// fake, ready to flip the preemption flag, and follows its log for its
// drain's end.
func armLastcallGCE(b *testing.B, ctx context.Context, node string, settings []string) notice {
	return armGCE(b, ctx, node, settings)
}

// armLastcallGCEWith is armLastcallGCE with extra settings (LASTCALL_*),
// which the variant's may override.
func armLastcallGCEWith(extra ...string) armFunc {
	return func(b *testing.B, ctx context.Context, node string, settings []string) notice {
		return armGCE(b, ctx, node, append(slices.Clone(extra), settings...))
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

// armQueue runs lastcall's queue processor against moto, the lifecycle
// proxy and a queue of their own, the doomed node running an instance of
// an Auto Scaling group. The notice is a terminate lifecycle hook's
// message; the instance goes, and the node dies, once lastcall completes
// the lifecycle action (or at the end of the window, the hook's bound in
// this scenario).
func armQueue(b *testing.B, ctx context.Context, node string, settings []string) notice {
	b.Helper()
	m, err := moto.Start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	proxy := moto.NewLifecycleProxy(m.URL())
	if err := proxy.Start(); err != nil {
		m.Stop()
		b.Fatal(err)
	}
	stopAWS := func() { proxy.Close(); m.Stop() }
	cfg := moto.Config(proxy.URL())
	group := uniq("traffic-asg")
	ids, err := moto.CreateGroup(ctx, cfg, moto.Group{Name: group, Size: 1})
	if err != nil {
		stopAWS()
		b.Fatal(err)
	}
	id := ids[0]
	patch := fmt.Sprintf(`{"spec":{"providerID":"aws:///%sa/%s"}}`, moto.Region, id)
	if _, err := env.Client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		stopAWS()
		b.Fatal(err)
	}
	q := sqs.NewFromConfig(cfg)
	name := uniq("traffic-queue")
	qo, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name})
	if err != nil {
		stopAWS()
		b.Fatal(err)
	}
	url := aws.ToString(qo.QueueUrl)
	p, err := agentproc.Start(ctx, agentproc.Config{Binary: lastcallBinary(b), Kubeconfig: env.Kubeconfig,
		LogPath: filepath.Join(env.Dir, "logs", "lastcall-queue-"+node+".log"),
		Env: append([]string{"LASTCALL_MODE=queue", "LASTCALL_QUEUE_URL=" + url, "LASTCALL_REGION=" + moto.Region,
			"LASTCALL_AWS_ENDPOINT=" + proxy.URL(), "LASTCALL_POD_NAME=traffic", "LASTCALL_POD_NAMESPACE=default",
			"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test"}, settings...)})
	if err != nil {
		stopAWS()
		b.Fatal(err)
	}
	drained, dies := make(chan time.Time, 1), make(chan time.Time, 1)
	var wg sync.WaitGroup
	deliver := func() {
		body := terminateHook(proxy, group, id)
		if _, err := q.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body}); err != nil {
			b.Errorf("sending the lifecycle hook's message: %v", err)
			return
		}
		wg.Go(func() {
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				if c, ok := proxy.Completion(id); ok {
					drained <- c.At
					dies <- time.Now()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return notice{deliver: deliver, drained: drained, dies: dies, stop: func() { p.Stop(); wg.Wait(); stopAWS() }}
}

// kubectlTimeout bounds `kubectl drain` inside the GCE window.
const kubectlTimeout = 25 * time.Second

// armKubectl runs `kubectl drain` on node at the notice, as an operator's
// hook would, with a timeout inside the window.
func armKubectl(b *testing.B, ctx context.Context, node string, _ []string) notice {
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
// started and the load has run, and the contender for node against it
// (lastcall with the variant's settings).
func armSpot(c contender) armFunc {
	return func(b *testing.B, ctx context.Context, node string, settings []string) notice {
		b.Helper()
		trigger := aemm.TriggerAfter(noticeLead + trafficBefore)
		imds := startAEMM(b, spotNotice(trigger))
		var p process
		if c.name == lastcallRun.name {
			p = startLastcallWith(b, node, imds.URL(), nil, settings)
		} else {
			p = c.start(b, node, imds.URL(), nil)
		}
		return notice{at: trigger, drained: c.done(b, ctx, p, node), stop: func() { p.Stop(); imds.Stop() }}
	}
}
