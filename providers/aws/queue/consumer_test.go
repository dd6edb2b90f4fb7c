package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/test/emulators/moto"
)

var (
	motoOnce sync.Once
	server   *moto.Server
	motoErr  error
)

func sqsClient(t *testing.T) (*sqs.Client, string) {
	t.Helper()
	motoOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		server, motoErr = moto.Start(ctx)
	})
	if motoErr != nil {
		t.Fatal(motoErr)
	}
	c := sqs.NewFromConfig(moto.Config(server.URL()))
	name := fmt.Sprintf("q-%d", time.Now().UnixNano())
	out, err := c.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: &name})
	if err != nil {
		t.Fatal(err)
	}
	return c, aws.ToString(out.QueueUrl)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.Stop()
	}
	os.Exit(code)
}

// handlerFunc adapts a func to Handler.
type handlerFunc func(context.Context, Delivery) Outcome

func (f handlerFunc) Handle(ctx context.Context, d Delivery) Outcome { return f(ctx, d) }

func run(t *testing.T, c *sqs.Client, url string, h Handler, opts Options) (*Consumer, func()) {
	t.Helper()
	opts.QueueURL = url
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.Visibility == 0 {
		opts.Visibility = 30 * time.Second
	}
	opts.WaitTime = time.Second
	con := NewConsumer(c, h, opts, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(t.Output(), nil)), clock.RealClock{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); con.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return con, stop
}

func send(t *testing.T, c *sqs.Client, url, body string) {
	t.Helper()
	if _, err := c.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body}); err != nil {
		t.Fatal(err)
	}
}

func depth(t *testing.T, c *sqs.Client, url string) int {
	t.Helper()
	n, err := moto.QueueDepth(context.Background(), c, url)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDoneDeletesWithReason(t *testing.T) {
	c, url := sqsClient(t)
	send(t, c, url, "a")
	send(t, c, url, "b")
	con, _ := run(t, c, url, handlerFunc(func(_ context.Context, d Delivery) Outcome {
		if string(d.Body) == "a" {
			return Done("processed")
		}
		return Done("unparsable")
	}), Options{})
	waitFor(t, "both deleted", func() bool {
		return testutil.ToFloat64(con.metrics.deleted.WithLabelValues("processed")) == 1 &&
			testutil.ToFloat64(con.metrics.deleted.WithLabelValues("unparsable")) == 1
	})
	if n := depth(t, c, url); n != 0 {
		t.Fatalf("%d messages left", n)
	}
}

func TestRetryReappearsAndLongWorkStaysInvisible(t *testing.T) {
	c, url := sqsClient(t)
	send(t, c, url, "slow")
	var mu sync.Mutex
	var counts []int
	con, _ := run(t, c, url, handlerFunc(func(ctx context.Context, d Delivery) Outcome {
		mu.Lock()
		counts = append(counts, d.ReceiveCount)
		first := len(counts) == 1
		mu.Unlock()
		if first {
			// Work for longer than the visibility timeout: extensions
			// must keep the message from being delivered again meanwhile.
			select {
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
			}
			return Retry("busy", 0)
		}
		return Done("processed")
	}), Options{Visibility: 3 * time.Second})
	waitFor(t, "the retried message processed", func() bool {
		return testutil.ToFloat64(con.metrics.deleted.WithLabelValues("processed")) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(counts) != 2 || counts[0] != 1 || counts[1] != 2 {
		t.Fatalf("receive counts %v, want [1 2]: one delivery during the long work, one after the retry", counts)
	}
	if got := testutil.ToFloat64(con.metrics.extensions); got < 1 {
		t.Fatalf("no visibility extension during 5 s of work under a 3 s timeout")
	}
}

func TestFailingMessageIsLeftToRedrive(t *testing.T) {
	c, url := sqsClient(t)
	send(t, c, url, "poison")
	var mu sync.Mutex
	seen := 0
	con, stop := run(t, c, url, handlerFunc(func(context.Context, Delivery) Outcome {
		mu.Lock()
		seen++
		mu.Unlock()
		return Retry("lookup-failed", 0)
	}), Options{MaxReceives: 3})
	waitFor(t, "the message left to redrive", func() bool {
		return testutil.ToFloat64(con.metrics.released.WithLabelValues("redrive")) >= 1
	})
	stop()
	if got := testutil.ToFloat64(con.metrics.released.WithLabelValues("lookup-failed")); got != 2 {
		t.Errorf("released for retry %v times before redrive, want 2", got)
	}
	if n := depth(t, c, url); n != 1 {
		t.Fatalf("queue depth %d: a failing message must never be deleted", n)
	}
}

// The queue's redrive policy sets the receive limit when it is below
// --max-receives: a handler is told how many receives are left, and a
// failing message is left to the redrive policy at the queue's limit.
func TestReceivesLeftFollowTheRedrivePolicy(t *testing.T) {
	c, url := sqsClient(t)
	if _, err := moto.DeadLetter(context.Background(), c, url, 3); err != nil {
		t.Fatal(err)
	}
	send(t, c, url, "m")
	var mu sync.Mutex
	var left []int
	con, _ := run(t, c, url, handlerFunc(func(_ context.Context, d Delivery) Outcome {
		mu.Lock()
		defer mu.Unlock()
		left = append(left, d.ReceivesLeft)
		return Retry("waiting", 0)
	}), Options{MaxReceives: 10})
	waitFor(t, "the third receive left to the redrive policy", func() bool {
		return testutil.ToFloat64(con.metrics.released.WithLabelValues("redrive")) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(left) != "[2 1 0]" {
		t.Fatalf("receives left on each receive %v, want [2 1 0]", left)
	}
}

// On a queue that dead-letters, a handler may send a fresh copy of a
// message: the copy has the original's body, receive count 1, the
// original's sent time and a count of the copies before it; the original
// is deleted as requeued. A queue that dead-letters nothing offers no
// copy.
func TestRequeueSendsAFreshCopy(t *testing.T) {
	c, url := sqsClient(t)
	dlq, err := moto.DeadLetter(context.Background(), c, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, url, `{"m":1}`)
	var mu sync.Mutex
	var seen []Delivery
	con, _ := run(t, c, url, handlerFunc(func(ctx context.Context, d Delivery) Outcome {
		mu.Lock()
		seen = append(seen, d)
		n := len(seen)
		mu.Unlock()
		if d.Requeue == nil {
			t.Error("no Requeue on a queue with a redrive policy")
			return Done("processed")
		}
		if n < 3 {
			if err := d.Requeue(ctx, "lease-failed", time.Second); err != nil {
				t.Error(err)
				return Retry("lease-failed", 0)
			}
			return Done(ReasonRequeued)
		}
		return Done("processed")
	}), Options{MaxReceives: 10})
	waitFor(t, "the second copy processed", func() bool {
		return testutil.ToFloat64(con.metrics.deleted.WithLabelValues("processed")) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("%d deliveries, want 3", len(seen))
	}
	for i, d := range seen {
		if string(d.Body) != `{"m":1}` || d.ReceiveCount != 1 || d.Copies != i || !d.SentAt.Equal(seen[0].SentAt) || d.ReceivesLeft != 1 {
			t.Errorf("delivery %d: body %s, receive count %d, copies %d, sent %s (first %s), receives left %d; want the same body, 1, %d, the first's sent time, 1",
				i, d.Body, d.ReceiveCount, d.Copies, d.SentAt, seen[0].SentAt, d.ReceivesLeft, i)
		}
	}
	if got := testutil.ToFloat64(con.metrics.requeued.WithLabelValues("lease-failed")); got != 2 {
		t.Errorf("lastcall_queue_messages_requeued_total{reason=lease-failed} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(con.metrics.deleted.WithLabelValues(ReasonRequeued)); got != 2 {
		t.Errorf("%v originals deleted as requeued, want 2", got)
	}
	if n := depth(t, c, url); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
	if n := depth(t, c, dlq); n != 0 {
		t.Errorf("%d messages dead-lettered", n)
	}

	c2, plain := sqsClient(t)
	send(t, c2, plain, "m")
	got := make(chan bool, 1)
	run(t, c2, plain, handlerFunc(func(_ context.Context, d Delivery) Outcome {
		got <- d.Requeue != nil
		return Done("processed")
	}), Options{MaxReceives: 10})
	select {
	case has := <-got:
		if has {
			t.Error("Requeue offered on a queue that dead-letters nothing")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the message on the queue without a redrive policy was not received")
	}
}

func TestRedriveLimit(t *testing.T) {
	for raw, want := range map[string]int{
		`{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dlq","maxReceiveCount":"3"}`: 3,
		`{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dlq","maxReceiveCount":5}`:   5,
		`{"maxReceiveCount":"0"}`: 0, `{"maxReceiveCount":"x"}`: 0, `{}`: 0, `not json`: 0,
	} {
		got, err := redriveLimit(raw)
		if want == 0 && err == nil {
			t.Errorf("redriveLimit(%s) = %d, want an error", raw, got)
		}
		if want != 0 && (err != nil || got != want) {
			t.Errorf("redriveLimit(%s) = %d, %v; want %d", raw, got, err, want)
		}
	}
}

// A message still worked on as it nears MaxInFlight: the handler is told
// to hand its work over, and the message is never extended past the
// bound.
func TestHandOverBeforeMaxInFlight(t *testing.T) {
	c, url := sqsClient(t)
	send(t, c, url, "long")
	con, _ := run(t, c, url, handlerFunc(func(ctx context.Context, d Delivery) Outcome {
		select {
		case <-d.HandOver:
			return Done("handed-over")
		case <-ctx.Done():
			return Retry("interrupted", 0)
		}
	}), Options{Visibility: 3 * time.Second, MaxInFlight: 6 * time.Second})
	waitFor(t, "the message handed over and deleted", func() bool {
		return testutil.ToFloat64(con.metrics.deleted.WithLabelValues("handed-over")) == 1
	})
	if n := testutil.ToFloat64(con.metrics.errors.WithLabelValues("change_visibility")); n != 0 {
		t.Errorf("%v failed extensions", n)
	}
}
