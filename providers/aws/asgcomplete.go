package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/episode"
	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/providers/aws/awsconfig"
	"github.com/lastcall/lastcall/providers/aws/imds"
	"github.com/lastcall/lastcall/providers/aws/lifecycle"
	"github.com/lastcall/lastcall/providers/aws/messages"
)

// transitionTerminating is the lifecycle transition of a terminate hook.
const transitionTerminating = "autoscaling:EC2_INSTANCE_TERMINATING"

// asgAPI is what the agent asks Auto Scaling: its group, the group's
// hooks, heartbeats and completion.
type asgAPI interface {
	lifecycle.API
	lifecycle.DescribeAPI
	DescribeAutoScalingInstances(ctx context.Context, in *autoscaling.DescribeAutoScalingInstancesInput,
		optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
}

var _ asgAPI = (*autoscaling.Client)(nil)

// asgHooks completes, from the agent, the terminate lifecycle hooks of the
// instance's Auto Scaling group (--asg-complete-lifecycle): it finds the
// group and its terminate hooks, keeps their actions alive while the node
// drains, and completes them once the drain has ended. Without it, an
// instance Auto Scaling terminates waits in Terminating:Wait until each
// hook times out (an hour by default).
type asgHooks struct {
	meta     imds.MetadataGetter
	aws      awsconfig.Options
	bound    time.Duration // --lifecycle-deadline
	failure  lifecycle.Result
	log      *slog.Logger
	clk      clock.WithTicker
	complete *lifecycle.Completer

	mu    sync.Mutex
	api   asgAPI
	found *terminateHooks
}

// terminateHooks are the instance's group and its terminate hooks.
type terminateHooks struct {
	instance, group string
	hooks           []string
	// global is the shortest of the hooks' global timeouts: how long
	// heartbeats can keep their actions alive.
	global time.Duration
}

func newASGHooks(meta imds.MetadataGetter, o awsconfig.Options, q queueOptions, reg prometheus.Registerer, log *slog.Logger, clk clock.WithTicker) *asgHooks {
	h := &asgHooks{meta: meta, aws: o, bound: q.LifecycleDeadline, failure: lifecycle.Result(q.FailureResult), log: log, clk: clk}
	h.complete = lifecycle.NewCompleter(lazyAPI{h}, reg, log, clk, q.HeartbeatInterval)
	return h
}

// client builds the Auto Scaling client on first use: the region is the
// flag's, else the instance's own (placement/region).
func (h *asgHooks) client(ctx context.Context) (asgAPI, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.api != nil {
		return h.api, nil
	}
	o := h.aws
	if o.Region == "" {
		region, err := imds.Get(ctx, h.meta, "placement/region")
		if err != nil {
			return nil, fmt.Errorf("the instance's region: %w", err)
		}
		o.Region = region
	}
	cfg, err := awsconfig.Load(ctx, o)
	if err != nil {
		return nil, err
	}
	h.api = o.AutoScaling(cfg)
	return h.api, nil
}

// lookup finds the instance's group and terminate hooks, once: they do not
// change while the instance terminates.
func (h *asgHooks) lookup(ctx context.Context) (*terminateHooks, error) {
	h.mu.Lock()
	found := h.found
	h.mu.Unlock()
	if found != nil {
		return found, nil
	}
	api, err := h.client(ctx)
	if err != nil {
		return nil, err
	}
	instance, err := imds.Get(ctx, h.meta, "instance-id")
	if err != nil {
		return nil, err
	}
	in, err := api.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{instance}})
	if err != nil {
		return nil, fmt.Errorf("describing Auto Scaling instance %s: %w", instance, err)
	}
	if len(in.AutoScalingInstances) == 0 {
		return nil, fmt.Errorf("instance %s is in no Auto Scaling group", instance)
	}
	found = &terminateHooks{instance: instance, group: aws.ToString(in.AutoScalingInstances[0].AutoScalingGroupName)}
	out, err := api.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: &found.group})
	if err != nil {
		return nil, fmt.Errorf("describing the lifecycle hooks of group %s: %w", found.group, err)
	}
	for _, lh := range out.LifecycleHooks {
		if aws.ToString(lh.LifecycleTransition) != transitionTerminating {
			continue
		}
		found.hooks = append(found.hooks, aws.ToString(lh.LifecycleHookName))
		if g := lifecycle.GlobalTimeoutOf(lh); found.global == 0 || g < found.global {
			found.global = g
		}
	}
	h.log.Info("Auto Scaling terminate hooks found", "instance", instance, "group", found.group, "hooks", found.hooks, "global_timeout", found.global)
	h.mu.Lock()
	h.found = found
	h.mu.Unlock()
	return found, nil
}

// deadline is imds.Options.ASGDeadline: the hooks' global timeout, at most
// --lifecycle-deadline; without a terminate hook, nothing waits for the
// drain and the instance goes at once: the poller's own deadline applies.
func (h *asgHooks) deadline(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	f, err := h.lookup(ctx)
	if err != nil {
		return 0, err
	}
	if len(f.hooks) == 0 {
		return 0, fmt.Errorf("group %s has no terminate lifecycle hook", f.group)
	}
	return min(f.global, h.bound), nil
}

// step is the explicit step the episode runs for one termination notice.
func (h *asgHooks) step() episode.Completer { return &asgStep{h: h} }

// asgStep keeps a termination's lifecycle actions alive while the node
// drains, then completes them.
type asgStep struct{ h *asgHooks }

func (s *asgStep) Name() string { return "asg-lifecycle" }

// retryEvery paces the look-ups a step makes until one succeeds.
const retryEvery = 5 * time.Second

// hooks looks the hooks up until it succeeds or ctx ends.
func (s *asgStep) hooks(ctx context.Context) (*terminateHooks, error) {
	for {
		f, err := s.h.lookup(ctx)
		if err == nil {
			return f, nil
		}
		s.h.log.Warn("finding the instance's terminate lifecycle hooks failed; retrying", "err", err, "retry_in", retryEvery)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("finding the instance's terminate lifecycle hooks: %w (last error: %w)", ctx.Err(), err)
		case <-s.h.clk.After(retryEvery):
		}
	}
}

func (s *asgStep) action(f *terminateHooks, hook string) messages.LifecycleAction {
	return messages.LifecycleAction{HookName: hook, GroupName: f.group, InstanceID: f.instance, Transition: transitionTerminating}
}

// KeepAlive sends each terminate hook's heartbeats until ctx ends.
func (s *asgStep) KeepAlive(ctx context.Context) {
	f, err := s.hooks(ctx)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, hook := range f.hooks {
		wg.Go(func() {
			if err := s.h.complete.KeepAlive(ctx, s.action(f, hook)); err != nil {
				s.h.log.Info("lifecycle heartbeats stopped", "hook", hook, "err", err)
			}
		})
	}
	wg.Wait()
}

// Complete completes each terminate hook: CONTINUE once the node is
// drained (or held, under --cordon-only), --lifecycle-failure-result when
// the drain did not finish. An action Auto Scaling no longer has is done.
func (s *asgStep) Complete(ctx context.Context, o drain.Outcome) error {
	f, err := s.hooks(ctx)
	if err != nil {
		return err
	}
	result := lifecycle.Continue
	if !o.Finished() && o != drain.DryRun && o != drain.CordonOnly {
		result = s.h.failure
	}
	var errs []error
	for _, hook := range f.hooks {
		err := s.h.complete.Complete(ctx, s.action(f, hook), result)
		if err != nil && !errors.Is(err, lifecycle.ErrNoActiveAction) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lazyAPI is the Completer's Auto Scaling client, built on first use.
type lazyAPI struct{ h *asgHooks }

func (l lazyAPI) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput,
	optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	api, err := l.h.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.CompleteLifecycleAction(ctx, in, optFns...)
}

func (l lazyAPI) RecordLifecycleActionHeartbeat(ctx context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput,
	optFns ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error) {
	api, err := l.h.client(ctx)
	if err != nil {
		return nil, err
	}
	return api.RecordLifecycleActionHeartbeat(ctx, in, optFns...)
}

// completingSource is the asg-lifecycle source, whose termination notices
// carry the step that completes the hooks (it satisfies the agent's
// CompletingSource).
type completingSource struct {
	interruption.Source
	h *asgHooks
}

func (c completingSource) Completer(ev interruption.Event) episode.Completer {
	if ev.Kind != interruption.KindASGTermination || ev.Action != interruption.ActionDrain {
		return nil
	}
	return c.h.step()
}
