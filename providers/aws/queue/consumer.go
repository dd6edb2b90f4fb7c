// Package queue is the queue processor's front end. The Consumer
// long-polls lastcall's SQS queue, hands each message to a Handler on a
// bounded pool of workers, keeps a message invisible while its work runs,
// and deletes it only when the handler says the work is done or can never
// be done, always with a reason. The Processor is that Handler: it turns a
// message into notices for the episodes of the instances' nodes (package
// episode), under each node's Lease, and completes lifecycle actions that
// need no drain.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// API is the part of the SQS client the consumer uses.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// The message attributes a copy made by Delivery.Requeue carries: when
// the first of its line entered the queue (Unix milliseconds), and how
// many copies came before it.
const (
	attrFirstSent = "lastcall-first-sent"
	attrCopies    = "lastcall-copies"
)

// Delivery is one received message.
type Delivery struct {
	MessageID string
	Body      []byte
	// ReceiveCount is how often SQS has delivered it, this time included.
	ReceiveCount int
	// SentAt is when it entered the queue; for a copy Requeue made, when
	// the original did.
	SentAt time.Time
	// Copies is how many copies of the message Requeue made before this
	// one.
	Copies int
	// ReceivesLeft is how many more times the message can be received
	// before the queue's redrive policy (or --max-receives) gives it up:
	// 0 on its last receive. Work that waits should wait with the message
	// in flight once few are left, rather than spend them.
	ReceivesLeft int
	// HandOver is closed when the message nears the longest it may stay in
	// flight (Options.MaxInFlight): work still running must then go on
	// without it, or give it back. Nil when there is no such bound.
	HandOver <-chan struct{}
	// Requeue sends a fresh copy of the message, visible after the given
	// delay (at most 15 minutes), with a receive count of its own: once it
	// succeeds the handler returns Done(ReasonRequeued) and the original
	// is deleted. Work that fails on one of the message's last receives
	// for a cause another replica may not share (this one cannot reach the
	// API server) hands the message on so, rather than spend a receive or
	// hold it. reason says why, as a metric label. Nil when the queue
	// dead-letters nothing (a message's receives then never run out) or
	// is FIFO (a copy would lose its place in its group).
	Requeue func(ctx context.Context, reason string, after time.Duration) error
	// Held says the message's nodes are held, or that its work needs no
	// hold (Options.Burst); the consumer calls it, if the handler has
	// not, once the handler returns. Safe to call more than once. Nil
	// when there is no burst to settle.
	Held func()
}

// ReasonRequeued is why a message whose fresh copy was sent is deleted.
const ReasonRequeued = "requeued"

// Outcome is a handler's verdict on a delivery.
type Outcome struct {
	// Delete removes the message: its work is done, or can never be done.
	Delete bool
	// Reason says why, as a short metric-safe word.
	Reason string
	// RetryAfter, when not deleting, is how soon it should reappear; zero
	// leaves the queue's visibility timeout to decide.
	RetryAfter time.Duration
}

// Done deletes the message for reason.
func Done(reason string) Outcome { return Outcome{Delete: true, Reason: reason} }

// Retry leaves the message to reappear after d.
func Retry(reason string, d time.Duration) Outcome { return Outcome{Reason: reason, RetryAfter: d} }

// Handler does the work of one message. It must return when ctx ends.
type Handler interface {
	Handle(ctx context.Context, d Delivery) Outcome
}

// Options tune a Consumer.
type Options struct {
	QueueURL string
	// Workers bounds the messages worked on at once.
	Workers int
	// Burst, when set, counts each message from its receipt until its
	// nodes are held (Delivery.Held).
	Burst *Burst
	// WaitTime is the long-poll wait, at most 20 s.
	WaitTime time.Duration
	// Visibility is how long a message stays invisible per extension; it
	// is extended every third of it while its work runs.
	Visibility time.Duration
	// MaxReceives: a message that fails after this many receives is left
	// to the queue's redrive policy (it is never deleted for failing).
	// The queue's own maxReceiveCount, when Run can read it and it is
	// lower, takes its place.
	MaxReceives int
	// MaxInFlight bounds how long a message stays in flight, counted from
	// its receipt (SQS allows 12 hours at most). A visibility timeout
	// before it, the handler is told to hand its work over
	// (Delivery.HandOver); the message is never extended past it. Zero:
	// no bound.
	MaxInFlight time.Duration
	// Health receives the outcome of every receive, as source "sqs".
	Health interruption.HealthReporter
}

// SourceName is the consumer's name in health reports.
const SourceName = "sqs"

// Consumer receives and dispatches messages.
type Consumer struct {
	api     API
	handler Handler
	opts    Options
	metrics *metrics
	log     *slog.Logger
	clock   clock.WithTicker
	// maxReceives is the receive limit in force: MaxReceives, or the
	// queue's redrive policy's when lower. Set by Run before any receive.
	maxReceives int
	// deadLetters says a message received maxReceives times may be moved
	// to a dead-letter queue: the queue has a redrive policy, or it could
	// not be read. Only then do receives left count for a handler.
	deadLetters bool
}

// NewConsumer returns a Consumer.
func NewConsumer(api API, h Handler, opts Options, reg prometheus.Registerer, log *slog.Logger, clk clock.WithTicker) *Consumer {
	return &Consumer{api: api, handler: h, opts: opts, metrics: newMetrics(reg), log: log, clock: clk}
}

// Run receives until ctx ends, then waits for the work in flight, which ends
// with ctx too; unfinished messages reappear for another replica or the next
// start.
func (c *Consumer) Run(ctx context.Context) error {
	c.maxReceives, c.deadLetters = c.receiveLimit(ctx)
	slots := make(chan struct{}, c.opts.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := receiveBackoff()
	for {
		// Receive only as many messages as there are free workers, so no
		// message waits invisible without anyone working on it.
		free := 0
		select {
		case slots <- struct{}{}:
			free = 1
		case <-ctx.Done():
			return nil
		}
	fill:
		for free < min(10, c.opts.Workers) {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		msgs, err := c.receive(ctx, free)
		for range free - len(msgs) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if c.opts.Health != nil {
				c.opts.Health.Failure(SourceName, string(interruption.ReasonOf(err)), err)
			}
			c.metrics.errors.WithLabelValues("receive").Inc()
			wait := backoff.Step()
			c.log.Error("receiving from SQS failed", "queue", c.opts.QueueURL, "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return nil
			case <-c.clock.After(wait):
			}
			continue
		}
		backoff = receiveBackoff()
		if c.opts.Health != nil {
			c.opts.Health.Success(SourceName)
		}
		c.opts.Burst.Received(len(msgs))
		for _, m := range msgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				c.work(ctx, m)
			}()
		}
	}
}

func (c *Consumer) receive(ctx context.Context, n int) ([]types.Message, error) {
	out, err := c.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    &c.opts.QueueURL,
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             int32(c.opts.WaitTime / time.Second),
		VisibilityTimeout:           int32(c.opts.Visibility / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount, types.MessageSystemAttributeNameSentTimestamp},
		MessageAttributeNames:       []string{attrFirstSent, attrCopies},
	})
	if err != nil {
		return nil, err
	}
	c.metrics.received.Add(float64(len(out.Messages)))
	return out.Messages, nil
}

func (c *Consumer) work(ctx context.Context, m types.Message) {
	c.metrics.inFlight.Inc()
	defer c.metrics.inFlight.Dec()
	d := Delivery{MessageID: aws.ToString(m.MessageId), Body: []byte(aws.ToString(m.Body))}
	if b := c.opts.Burst; b != nil {
		var once sync.Once
		d.Held = func() { once.Do(b.Settled) }
		defer d.Held()
	}
	d.ReceiveCount, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
		d.SentAt = time.UnixMilli(ms)
	}
	if ms, err := strconv.ParseInt(attribute(m, attrFirstSent), 10, 64); err == nil {
		d.SentAt = time.UnixMilli(ms)
	}
	d.Copies, _ = strconv.Atoi(attribute(m, attrCopies))
	d.ReceivesLeft = math.MaxInt32
	if c.maxReceives > 0 && c.deadLetters {
		d.ReceivesLeft = max(0, c.maxReceives-d.ReceiveCount)
	}
	log := c.log.With("message_id", d.MessageID, "receive_count", d.ReceiveCount)
	if d.Copies > 0 {
		log = log.With("copies_before", d.Copies)
	}
	if c.deadLetters && !strings.HasSuffix(c.opts.QueueURL, ".fifo") {
		d.Requeue = func(ctx context.Context, reason string, after time.Duration) error {
			return c.requeue(ctx, m, d, reason, after, log)
		}
	}

	wctx, stop := context.WithCancel(ctx)
	extended := make(chan struct{})
	handOver := make(chan struct{})
	if c.opts.MaxInFlight > 0 {
		d.HandOver = handOver
	}
	receivedAt := c.clock.Now()
	go func() {
		defer close(extended)
		c.keepInvisible(wctx, m.ReceiptHandle, receivedAt, handOver, log)
	}()
	out := c.handler.Handle(wctx, d)
	stop()
	<-extended

	// The message's fate is settled even when ctx has ended (shutdown).
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	switch {
	case out.Delete:
		if _, err := c.api.DeleteMessage(sctx, &sqs.DeleteMessageInput{QueueUrl: &c.opts.QueueURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
			c.metrics.errors.WithLabelValues("delete").Inc()
			log.Error("deleting message failed; it will be delivered again", "reason", out.Reason, "err", err)
			return
		}
		c.metrics.deleted.WithLabelValues(out.Reason).Inc()
		log.Info("message deleted", "reason", out.Reason)
	case c.maxReceives > 0 && d.ReceiveCount >= c.maxReceives:
		c.metrics.released.WithLabelValues("redrive").Inc()
		log.Warn("message failed as often as allowed; leaving it to the queue's redrive policy", "reason", out.Reason, "max_receives", c.maxReceives)
	default:
		c.metrics.released.WithLabelValues(out.Reason).Inc()
		vis := int32(out.RetryAfter / time.Second)
		if _, err := c.api.ChangeMessageVisibility(sctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: &c.opts.QueueURL, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: vis,
		}); err != nil {
			c.metrics.errors.WithLabelValues("change_visibility").Inc()
		}
		log.Info("message left to reappear", "reason", out.Reason, "in", time.Duration(vis)*time.Second)
	}
}

// attribute is the string value of m's message attribute name.
func attribute(m types.Message, name string) string {
	if v, ok := m.MessageAttributes[name]; ok {
		return aws.ToString(v.StringValue)
	}
	return ""
}

// requeue sends a copy of m, visible after after, carrying m's own message
// attributes and when the first of its line was sent.
func (c *Consumer) requeue(ctx context.Context, m types.Message, d Delivery, reason string, after time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	attrs := map[string]types.MessageAttributeValue{}
	for k, v := range m.MessageAttributes {
		attrs[k] = v
	}
	str := func(v string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("Number"), StringValue: aws.String(v)}
	}
	attrs[attrFirstSent] = str(strconv.FormatInt(d.SentAt.UnixMilli(), 10))
	attrs[attrCopies] = str(strconv.Itoa(d.Copies + 1))
	delay := int32(min(max(after, 0), 15*time.Minute) / time.Second)
	out, err := c.api.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: &c.opts.QueueURL, MessageBody: m.Body, DelaySeconds: delay, MessageAttributes: attrs,
	})
	if err != nil {
		c.metrics.errors.WithLabelValues("send").Inc()
		return fmt.Errorf("sending a fresh copy of the message: %w", err)
	}
	c.metrics.requeued.WithLabelValues(reason).Inc()
	log.Info("fresh copy of the message sent, for any replica to take up; the original will be deleted",
		"reason", reason, "copy_id", aws.ToString(out.MessageId), "visible_in", time.Duration(delay)*time.Second)
	return nil
}

// keepInvisible extends the message's visibility every third of the
// visibility timeout until ctx ends. After a failed extension (the SDK's
// retries spent) it tries again after a second, not a third of the
// timeout, so that a short timeout does not lapse mid-work. With a
// MaxInFlight, it closes handOver once the message is a visibility timeout
// from it, and never extends the message past it.
func (c *Consumer) keepInvisible(ctx context.Context, receipt *string, receivedAt time.Time, handOver chan struct{}, log *slog.Logger) {
	every := c.opts.Visibility / 3
	wait := every
	handedOver := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(wait):
		}
		wait = every
		vis := c.opts.Visibility
		if c.opts.MaxInFlight > 0 {
			left := receivedAt.Add(c.opts.MaxInFlight).Sub(c.clock.Now())
			if left <= c.opts.Visibility && !handedOver {
				handedOver = true
				close(handOver)
				log.Info("message near the longest it may stay in flight; handing its work over", "max_in_flight", c.opts.MaxInFlight)
			}
			vis = min(vis, left.Truncate(time.Second))
			if vis < time.Second {
				log.Warn("message in flight as long as allowed; no longer extending it", "max_in_flight", c.opts.MaxInFlight)
				<-ctx.Done()
				return
			}
		}
		_, err := c.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: &c.opts.QueueURL, ReceiptHandle: receipt, VisibilityTimeout: int32(vis / time.Second),
		})
		switch {
		case err == nil:
			c.metrics.extensions.Inc()
		case ctx.Err() != nil || errors.Is(err, context.Canceled):
			return
		default:
			c.metrics.errors.WithLabelValues("change_visibility").Inc()
			wait = min(every, extensionRetry)
			log.Warn("extending message visibility failed; retrying", "err", err, "retry_in", wait)
		}
	}
}

// receiveLimit is the receive limit in force: MaxReceives, or the
// maxReceiveCount of the queue's redrive policy when that is lower. A
// queue whose attributes cannot be read (sqs:GetQueueAttributes not
// granted) keeps MaxReceives, with a warning.
func (c *Consumer) receiveLimit(ctx context.Context) (limit int, deadLetters bool) {
	limit = c.opts.MaxReceives
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := c.api.GetQueueAttributes(actx, &sqs.GetQueueAttributesInput{
		QueueUrl: &c.opts.QueueURL, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		c.metrics.errors.WithLabelValues("get_attributes").Inc()
		c.log.Warn("cannot read the queue's redrive policy; counting receives against --max-receives alone",
			"queue", c.opts.QueueURL, "max_receives", limit, "err", err)
		return limit, true
	}
	raw := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if raw == "" {
		c.log.Info("queue has no redrive policy: no message is dead-lettered", "queue", c.opts.QueueURL, "max_receives", limit)
		return limit, false
	}
	n, err := redriveLimit(raw)
	if err != nil {
		c.metrics.errors.WithLabelValues("get_attributes").Inc()
		c.log.Warn("queue's redrive policy unreadable; counting receives against --max-receives alone",
			"queue", c.opts.QueueURL, "redrive_policy", raw, "err", err)
		return limit, true
	}
	if limit <= 0 || n < limit {
		limit = n
	}
	c.log.Info("queue's redrive policy read", "queue", c.opts.QueueURL, "max_receive_count", n, "max_receives", limit)
	return limit, true
}

// redriveLimit reads maxReceiveCount from a RedrivePolicy attribute, which
// SQS gives as a number or a string.
func redriveLimit(raw string) (int, error) {
	var p struct {
		MaxReceiveCount json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return 0, fmt.Errorf("redrive policy: %w", err)
	}
	n, err := strconv.Atoi(strings.Trim(string(p.MaxReceiveCount), `"`))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("redrive policy: maxReceiveCount %s is not a positive number", p.MaxReceiveCount)
	}
	return n, nil
}

// receiveBackoff paces receives after failures: 1 s, doubling to 30 s.
func receiveBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
}

// MaxInFlight is the longest SQS lets a message stay in flight, counted
// from its receipt.
const MaxInFlight = 12 * time.Hour

// extensionRetry is the wait before retrying a failed visibility extension.
const extensionRetry = time.Second

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.QueueURL == "":
		return errors.New("queue URL is required")
	case o.Workers < 1:
		return fmt.Errorf("workers must be at least 1, got %d", o.Workers)
	case o.WaitTime < 0 || o.WaitTime > 20*time.Second:
		return fmt.Errorf("wait time must be 0-20s, got %s", o.WaitTime)
	case o.Visibility < 3*time.Second:
		return fmt.Errorf("visibility must be at least 3s, got %s", o.Visibility)
	case o.MaxInFlight != 0 && (o.MaxInFlight <= o.Visibility || o.MaxInFlight > MaxInFlight):
		return fmt.Errorf("max in flight must be longer than the visibility (%s) and at most %s, got %s", o.Visibility, MaxInFlight, o.MaxInFlight)
	}
	return nil
}
