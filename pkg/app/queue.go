package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/lastcall/lastcall/pkg/health"
	"github.com/lastcall/lastcall/pkg/lease"
	"github.com/lastcall/lastcall/pkg/node"
	"github.com/lastcall/lastcall/pkg/provider"
)

// buildQueue wires the queue processor: the cloud's queue front end feeding
// the episodes of every node, under per-node Leases, and every node's
// drainability.
func buildQueue(ctx context.Context, o *Options, env Env, reg prometheus.Registerer) (*process, error) {
	qp := o.queueProvider()
	if qp == nil {
		return nil, errors.New("no cloud lastcall knows has a queue")
	}
	holder := o.PodName
	if holder == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --pod-name and no hostname for the lease holder identity: %w", err)
		}
		holder = h
	}
	log := env.Log.With("mode", ModeQueue)
	c := newCommon(ctx, o, env, holder, reg)
	core := env.Client.CoreV1().RESTClient()
	nodeInformer := informer(core, "nodes", &corev1.Node{}, fields.Everything())
	// Finished pods need no drain; leaving them out keeps the cache small.
	podInformer := informer(core, "pods", &corev1.Pod{}, fields.AndSelectors(
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodSucceeded)),
		fields.OneTermNotEqualSelector("status.phase", string(corev1.PodFailed))))
	k, err := newKernel(o, env, c, nodeInformer, podInformer, node.OwnerQueue, log)
	if err != nil {
		return nil, err
	}
	sourceHealth := health.NewSources(c.reg, env.Clock, o.Health.StaleAfter)
	leases := lease.NewLocker(env.Client, o.leaseNamespace(), holder, o.Lease.Duration, env.Clock, log.With("component", "lease"),
		lease.WithRegistry(c.reg), lease.WithNodeUID(nodeUID(nodeInformer)))
	front, err := qp.NewQueue(ctx, provider.QueueEnv{Episodes: k.episodes, Nodes: nodeInformer, Leases: leases, Holds: k.nodes,
		Health: sourceHealth, Register: sourceHealth.Register, Registry: c.reg, Log: log, Clock: env.Clock, DryRun: o.DryRun})
	if err != nil {
		return nil, err
	}
	d, err := newClusterDrainability(o, env, c, nodeInformer, podInformer, k.pods, qp.NoticeWindow(), log)
	if err != nil {
		return nil, err
	}
	log.Info("queue processor starting", "cloud", qp.Name(), "holder", holder)
	informers := append([]cache.SharedIndexInformer{nodeInformer, podInformer}, d.informers()...)
	// The queue's receive loop waits on SQS: its health is readiness (with
	// the start-up grace of Check, as the first receive is a long poll).
	// The loop lastcall runs on its own beside it, the drainability passes
	// over the caches, is liveness.
	return &process{common: c, informers: informers, liveness: d.alive.Check, readiness: sourceHealth.Check,
		main: k.run(beside(front.Run, d.run))}, nil
}

// nodeUID gives a node's UID from the node informer's cache, so that each
// node's Lease is owned by the node and deleted with it.
func nodeUID(nodes cache.SharedIndexInformer) func(string) (types.UID, bool) {
	return func(name string) (types.UID, bool) {
		o, ok, err := nodes.GetStore().GetByKey(name)
		if err != nil || !ok {
			return "", false
		}
		n, ok := o.(*corev1.Node)
		if !ok {
			return "", false
		}
		return n.UID, true
	}
}
