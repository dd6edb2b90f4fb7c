package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/agentproc"
	"github.com/lastcall/lastcall/test/cluster"
	"github.com/lastcall/lastcall/test/emulators/moto"
)

var (
	motoOnce   sync.Once
	motoServer *moto.Server
	motoErr    error
)

// sharedMoto starts one moto_server for the package; each test makes its
// own queue and groups, so they do not see each other's state.
func sharedMoto(t *testing.T) *moto.Server {
	t.Helper()
	motoOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		motoServer, motoErr = moto.Start(ctx)
	})
	if motoErr != nil {
		t.Fatalf("%v", motoErr)
	}
	return motoServer
}

// awsEnv is moto behind the faithful lifecycle proxy, and one SQS queue.
type awsEnv struct {
	proxy    *moto.LifecycleProxy
	cfg      aws.Config
	sqs      *sqs.Client
	queueURL string
}

func newAWSEnv(t *testing.T) *awsEnv {
	t.Helper()
	m := sharedMoto(t)
	p := moto.NewLifecycleProxy(m.URL())
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	cfg := moto.Config(p.URL())
	client := sqs.NewFromConfig(cfg)
	name := fmt.Sprintf("lastcall-%d", time.Now().UnixNano())
	out, err := client.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: &name})
	if err != nil {
		t.Fatalf("creating queue: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return &awsEnv{proxy: p, cfg: cfg, sqs: client, queueURL: aws.ToString(out.QueueUrl)}
}

// member is an instance of a group, its kwok node, and the token of its
// active terminate lifecycle action.
type member struct {
	group, instance, node, token string
}

// group creates an Auto Scaling group of n instances with a terminate hook
// in moto, a kwok node for each instance (named after it, with its provider
// ID), and registers each instance's terminate lifecycle action with the
// lifecycle proxy, as Auto Scaling would on scale-in.
func (e *awsEnv) group(t *testing.T, n int32, labels map[string]string) []member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	name := fmt.Sprintf("asg-%d", time.Now().UnixNano()%1_000_000_000)
	ids, err := moto.CreateGroup(ctx, e.cfg, moto.Group{Name: name, Size: n,
		Hooks: []moto.Hook{{Name: "drain", HeartbeatTimeout: 300 * time.Second}}})
	if err != nil {
		t.Fatalf("creating group: %v", err)
	}
	var out []member
	for _, id := range ids {
		m := member{group: name, instance: id, node: "ip-" + id}
		if _, err := env.AddNode(ctx, m.node, cluster.WithLabels(labels),
			cluster.WithProviderID("aws:///"+moto.Region+"a/"+id)); err != nil {
			t.Fatal(err)
		}
		m.token = e.proxy.Register(moto.LifecycleActionState{GroupName: name, HookName: "drain", InstanceID: id,
			Transition: "autoscaling:EC2_INSTANCE_TERMINATING"})
		out = append(out, m)
	}
	return out
}

// launchHook creates a group of one instance in moto, named after prefix,
// registers its launch lifecycle action with the lifecycle proxy, and puts
// the action's EventBridge message on the queue. It returns the instance
// and the action's token.
func (e *awsEnv) launchHook(t *testing.T, prefix string) (id, token string) {
	t.Helper()
	group := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
	ids, err := moto.CreateGroup(context.Background(), e.cfg, moto.Group{Name: group, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	id = ids[0]
	token = e.proxy.Register(moto.LifecycleActionState{GroupName: group, HookName: "launch", InstanceID: id,
		Transition: "autoscaling:EC2_INSTANCE_LAUNCHING"})
	e.send(t, eventBridge("aws.autoscaling", "EC2 Instance-launch Lifecycle Action", nil, map[string]any{
		"LifecycleActionToken": token, "AutoScalingGroupName": group, "LifecycleHookName": "launch",
		"EC2InstanceId": id, "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING"}))
	return id, token
}

// send puts a message body on the queue.
// guardedHook sets the scene most queue tests share: one instance whose
// node runs a pod its PodDisruptionBudget lets go only once a replacement
// is Ready on a spare node, and the instance's terminate hook on the queue.
// It returns the instance and the pods' namespace.
func (e *awsEnv) guardedHook(t *testing.T) (member, string) {
	t.Helper()
	ns := newNamespace(t)
	pool := map[string]string{"pool": ns}
	m := e.group(t, 1, pool)[0]
	guardedPod(t, ns, m.node, pool)
	newNode(t, "spare", pool)
	e.send(t, terminateHook(m))
	return m, ns
}

func (e *awsEnv) send(t *testing.T, body string) {
	t.Helper()
	if _, err := e.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: &e.queueURL, MessageBody: &body}); err != nil {
		t.Fatal(err)
	}
}

// depth is the number of messages in the queue, visible or in flight.
func (e *awsEnv) depth(t *testing.T) int {
	t.Helper()
	n, err := moto.QueueDepth(context.Background(), e.sqs, e.queueURL)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startProcessor runs a queue processor replica in this process until the
// test ends or stop is called; args are further flags, which win.
func (e *awsEnv) startProcessor(t *testing.T, replica string, args ...string) *agent {
	t.Helper()
	a := runApp(t, options(t, append(e.processorArgs(replica), args...)...), "replica", replica)
	eventually(t, "the processor to be ready", func() bool { return a.probe(t, "/readyz") == 200 })
	return a
}

// processorArgs are startProcessor's settings.
func (e *awsEnv) processorArgs(replica string) []string {
	return []string{"--mode=queue", "--queue-url=" + e.queueURL, "--region=" + moto.Region, "--aws-endpoint=" + e.proxy.URL(),
		"--heartbeat-interval=1s", "--retry-after=1s", "--visibility-timeout=6s", "--lease-duration=3s",
		"--pod-name=" + replica, "--pod-namespace=default", "--log-format=text"}
}

// startProcessorVia is startProcessor with every call to the API server
// going through a forwarder the test can cut.
func (e *awsEnv) startProcessorVia(t *testing.T, replica string) (*agent, *forwarder) {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	api := forward(t, "127.0.0.1", u.Host)
	a := runAppVia(t, options(t, e.processorArgs(replica)...), api.addr, "replica", replica)
	eventually(t, "the processor to be ready", func() bool { return a.probe(t, "/readyz") == 200 })
	return a, api
}

// startProcessorProcess runs a queue processor replica as the shipped
// binary in a process of its own, with startProcessor's settings and then
// extra (LASTCALL_* overrides), until the test ends.
func (e *awsEnv) startProcessorProcess(t *testing.T, replica string, extra ...string) *agentproc.Agent {
	t.Helper()
	p, err := agentproc.Start(context.Background(), agentproc.Config{
		Binary: buildLastcall(t), Kubeconfig: env.Kubeconfig, LogPath: filepath.Join(t.TempDir(), replica+".log"),
		Env: append([]string{"LASTCALL_MODE=queue", "LASTCALL_QUEUE_URL=" + e.queueURL, "LASTCALL_REGION=" + moto.Region,
			"LASTCALL_AWS_ENDPOINT=" + e.proxy.URL(), "LASTCALL_POD_NAME=" + replica, "LASTCALL_POD_NAMESPACE=default",
			"LASTCALL_HEARTBEAT_INTERVAL=1s", "LASTCALL_VISIBILITY_TIMEOUT=6s", "LASTCALL_LEASE_DURATION=3s",
			"LASTCALL_RETRY_AFTER=1s", "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test"}, extra...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// eventBridge renders an EventBridge event of now as SQS receives it.
func eventBridge(source, detailType string, resources []string, detail any) string {
	return eventBridgeAt(time.Now(), source, detailType, resources, detail)
}

// eventBridgeAt renders an EventBridge event of time at.
func eventBridgeAt(at time.Time, source, detailType string, resources []string, detail any) string {
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": fmt.Sprintf("%08x-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffff, time.Now().UnixNano()),
		"detail-type": detailType, "source": source, "account": "123456789012",
		"time": at.UTC().Format(time.RFC3339), "region": moto.Region,
		"resources": resources, "detail": detail,
	})
	return string(b)
}

func instanceARN(id string) string {
	return "arn:aws:ec2:" + moto.Region + ":123456789012:instance/" + id
}

// terminateHook is the EventBridge form of m's terminate lifecycle action.
func terminateHook(m member) string { return terminateHookAt(m, time.Now()) }

// terminateHookAt is m's terminate lifecycle action, begun at.
func terminateHookAt(m member, at time.Time) string {
	return eventBridgeAt(at, "aws.autoscaling", "EC2 Instance-terminate Lifecycle Action", []string{"arn:aws:autoscaling:" + moto.Region + ":123456789012:autoScalingGroup:x:autoScalingGroupName/" + m.group},
		map[string]any{
			"LifecycleActionToken": m.token, "AutoScalingGroupName": m.group, "LifecycleHookName": "drain",
			"EC2InstanceId": m.instance, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
		})
}

func spotWarning(instance string) string {
	return eventBridge("aws.ec2", "EC2 Spot Instance Interruption Warning", []string{instanceARN(instance)},
		map[string]any{"instance-id": instance, "instance-action": "terminate"})
}

func drainedNode(n *corev1.Node) bool {
	return n.Spec.Unschedulable && strings.Contains(n.Annotations["lastcall.io/state"], `"drain":"success"`)
}
