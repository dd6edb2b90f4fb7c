package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// Getter reads a node, typically from an informer cache. It may return a
// stale copy: a conflict on update falls back to a live read.
type Getter func(name string) (*corev1.Node, error)

// Client changes nodes on behalf of one owner (a mode of lastcall): the
// holds it makes carry the owner, and it releases only its own.
type Client struct {
	client kubernetes.Interface
	cached Getter
	clock  clock.Clock
	owner  Owner
	dryRun bool
	log    *slog.Logger
	// effect is the effect of the taints it adds.
	effect corev1.TaintEffect
}

// NewClient returns a Client for owner. cached may be nil. In dry-run mode
// it reads but never writes, and logs what it would change.
func NewClient(c kubernetes.Interface, cached Getter, clk clock.Clock, owner Owner, dryRun bool, log *slog.Logger) *Client {
	return &Client{client: c, cached: cached, clock: clk, owner: owner, dryRun: dryRun, log: log, effect: corev1.TaintEffectNoSchedule}
}

// WithTaintEffect has c's holds taint with effect (NoSchedule by default)
// and returns c.
func (c *Client) WithTaintEffect(effect corev1.TaintEffect) *Client {
	if effect != "" {
		c.effect = effect
	}
	return c
}

// Owner is the owner of the holds this client makes.
func (c *Client) Owner() Owner { return c.owner }

// Change says what a call changed on the node.
type Change struct {
	Tainted, Cordoned, LBExcluded bool
	// Uncordoned and LBRestored are set by Release.
	Uncordoned, LBRestored, Untainted bool
	// Unchanged is true when the node already was as asked.
	Unchanged bool
	// DryRun is true when the change was only logged.
	DryRun bool
	// Unreadable, when set, says the node's state annotation could not be
	// read (it wraps ErrUnreadable): Hold took the node anew, and nothing
	// found on it counts as lastcall's.
	Unreadable error
}

// Hold taints and cordons the node for ev and takes it out of external load
// balancers, recording what it changed.
func (c *Client) Hold(ctx context.Context, name string, ev interruption.Event) (Change, error) {
	var ch Change
	defer func() { ch.DryRun = c.dryRun && !ch.Unchanged }()
	unreadable, err := c.update(ctx, name, func(n *corev1.Node, s *State) error {
		ch = Change{}
		if _, ok := s.Hold(ev.ID); ok && hasTaint(n, TaintKey(ev.Kind)) && n.Spec.Unschedulable {
			ch.Unchanged = true
			return nil
		}
		if key := TaintKey(ev.Kind); !hasTaint(n, key) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{
				Key: key, Value: interruption.ShortID(ev.ID), Effect: c.effect,
			})
			if !slices.Contains(s.Tainted, key) {
				s.Tainted = append(s.Tainted, key)
			}
			ch.Tainted = true
		}
		if !n.Spec.Unschedulable {
			n.Spec.Unschedulable = true
			s.Cordoned, ch.Cordoned = true, true
		}
		if _, ok := n.Labels[LabelExcludeLB]; !ok {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[LabelExcludeLB] = "true"
			s.LBExcluded, ch.LBExcluded = true, true
		}
		if _, ok := s.Hold(ev.ID); !ok {
			h := Hold{ID: ev.ID, Kind: ev.Kind, Action: ev.Action, Owner: c.owner, Since: c.clock.Now().UTC()}
			if !ev.Deadline.IsZero() {
				d := ev.Deadline.UTC()
				h.Deadline = &d
			}
			s.Holds = append(s.Holds, h)
		}
		return nil
	})
	ch.Unreadable = unreadable
	return ch, err
}

// TaintOutOfService is the taint that tells Kubernetes a node is shut down
// for good: its pods are deleted and its volumes detached at once, without
// the usual wait for the kubelet.
var TaintOutOfService = corev1.Taint{Key: "node.kubernetes.io/out-of-service", Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}

// MarkOutOfService adds TaintOutOfService to the node, whose instance is
// known to be gone; it reports whether it added it. The taint is not
// lastcall's to remove: the node is not coming back, and it goes with the
// Node object.
func (c *Client) MarkOutOfService(ctx context.Context, name string) (bool, error) {
	added := false
	_, err := c.update(ctx, name, func(n *corev1.Node, _ *State) error {
		added = false
		if hasTaint(n, TaintOutOfService.Key) {
			return nil
		}
		taint := TaintOutOfService
		taint.TimeAdded = &metav1.Time{Time: c.clock.Now()}
		n.Spec.Taints = append(n.Spec.Taints, taint)
		added = true
		return nil
	})
	return added && !c.dryRun, err
}

// Release drops the hold of event id, if it is this client's owner's: a
// hold another owner made is left as it is (Unchanged). The kind's taint
// goes when no other hold of that kind remains; the cordon and the
// load-balancer label go with the last hold; each only if lastcall added
// it.
func (c *Client) Release(ctx context.Context, name, id string) (Change, error) {
	var ch Change
	defer func() { ch.DryRun = c.dryRun && !ch.Unchanged }()
	unreadable, err := c.update(ctx, name, func(n *corev1.Node, s *State) error {
		ch = Change{}
		h, ok := s.Hold(id)
		if !ok || h.Owner != c.owner {
			ch.Unchanged = true
			return nil
		}
		kind := h.Kind
		s.Holds = slices.DeleteFunc(s.Holds, func(h Hold) bool { return h.ID == id })
		if key := TaintKey(kind); !slices.ContainsFunc(s.Holds, func(h Hold) bool { return h.Kind == kind }) && slices.Contains(s.Tainted, key) {
			before := len(n.Spec.Taints)
			n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
			s.Tainted = slices.DeleteFunc(s.Tainted, func(k string) bool { return k == key })
			ch.Untainted = len(n.Spec.Taints) != before
		}
		if len(s.Holds) == 0 {
			if s.Cordoned && n.Spec.Unschedulable {
				n.Spec.Unschedulable = false
				ch.Uncordoned = true
			}
			if _, ok := n.Labels[LabelExcludeLB]; ok && s.LBExcluded {
				delete(n.Labels, LabelExcludeLB)
				ch.LBRestored = true
			}
			*s = State{}
		}
		return nil
	})
	ch.Unreadable = unreadable
	return ch, err
}

// RecordDrain stores how a drain ended (a drain.Outcome) on the holds of
// the given events.
func (c *Client) RecordDrain(ctx context.Context, name, outcome string, ids ...string) error {
	_, err := c.update(ctx, name, func(_ *corev1.Node, s *State) error {
		at := c.clock.Now().UTC()
		for _, id := range ids {
			if h, ok := s.Hold(id); ok {
				h.Drain, h.DrainAt = outcome, &at
			}
		}
		return nil
	})
	return err
}

// Carry sets (or, when c is nil, clears) the carry of the hold of event
// id, if it is this client's owner's: from then on the hold alone records
// the notice. It returns ErrNoHold when there is no such hold.
func (c *Client) Carry(ctx context.Context, name, id string, carry *Carry) error {
	_, err := c.update(ctx, name, func(_ *corev1.Node, s *State) error {
		h, ok := s.Hold(id)
		if !ok || h.Owner != c.owner {
			return fmt.Errorf("node %s: %w %s", name, ErrNoHold, id)
		}
		h.Carry = carry
		return nil
	})
	return err
}

// ErrNoHold says a node has no hold of the client's owner for an event.
var ErrNoHold = errors.New("no hold of this owner for event")

// State reads lastcall's state on the node, live: decisions are taken on it.
// An unreadable state is an empty one: nothing on the node counts as
// lastcall's.
func (c *Client) State(ctx context.Context, name string) (State, *corev1.Node, error) {
	n, err := c.get(ctx, name, true)
	if err != nil {
		return State{}, nil, err
	}
	s, err := StateOf(n)
	if errors.Is(err, ErrUnreadable) {
		c.log.Warn("node state unreadable: nothing on it counts as lastcall's", "node", name, "err", err)
		return State{}, n, nil
	}
	return s, n, err
}

func (c *Client) get(ctx context.Context, name string, live bool) (*corev1.Node, error) {
	if !live && c.cached != nil {
		if n, err := c.cached(name); err == nil && n != nil {
			return n.DeepCopy(), nil
		}
	}
	n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading node %s: %w", name, err)
	}
	return n, nil
}

// update applies mutate to the node and its state and writes the change back
// as a merge patch carrying the resourceVersion it was computed from, so it
// needs only the patch permission and still fails on a concurrent change.
// The first read may come from the cache, which can lag lastcall's own last
// write: a stale copy that needs a change fails the patch's resourceVersion
// check, and a stale copy that seems to need none is read again live, so a
// decision to do nothing is never taken on stale data.
//
// An unreadable state is returned as unreadable, not as an error: the
// mutation then starts from an empty state, and the node is written only
// if that leaves a hold (the annotation is replaced then).
func (c *Client) update(ctx context.Context, name string, mutate func(*corev1.Node, *State) error) (unreadable error, err error) {
	backoff := retry.DefaultBackoff
	for attempt := 0; ; attempt++ {
		live := attempt > 0 || c.cached == nil
		n, err := c.get(ctx, name, live)
		if err != nil {
			return nil, err
		}
		s, err := StateOf(n)
		unreadable = nil
		switch {
		case errors.Is(err, ErrUnreadable):
			unreadable, s = err, State{}
		case err != nil:
			return nil, err
		}
		before := n.DeepCopy()
		if err := mutate(n, &s); err != nil {
			if !live && errors.Is(err, ErrNoHold) {
				continue // the cache may not have the hold yet
			}
			return unreadable, err
		}
		if unreadable != nil && len(s.Holds) == 0 {
			if !live {
				continue // the cache may not have lastcall's last write yet
			}
			return unreadable, nil // nothing of lastcall's to write
		}
		if err := s.write(n); err != nil {
			return unreadable, err
		}
		if equalNode(before, n) {
			if live {
				return unreadable, nil
			}
			continue
		}
		if c.dryRun {
			c.log.Info("dry run: would update node", "node", name,
				"unschedulable", n.Spec.Unschedulable, "taints", len(n.Spec.Taints), "state", n.Annotations[AnnotationState])
			return unreadable, nil
		}
		patch, err := mergePatch(before, n)
		if err != nil {
			return unreadable, err
		}
		start := c.clock.Now()
		_, err = c.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		switch {
		case err == nil:
			c.log.Debug("node patched", "node", name, "took", c.clock.Since(start), "attempt", attempt+1)
			return unreadable, nil
		case !apierrors.IsConflict(err):
			return unreadable, fmt.Errorf("updating node %s: %w", name, err)
		case attempt+1 >= backoff.Steps:
			return unreadable, fmt.Errorf("updating node %s: still conflicting after %d attempts: %w", name, attempt+1, err)
		}
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return unreadable, ctx.Err()
			case <-c.clock.After(backoff.Step()):
			}
		}
	}
}

// mergePatch is the JSON merge patch (RFC 7386) from before to after over the
// fields lastcall changes: labels, annotations, unschedulable and taints (a
// list, so replaced whole). It carries before's resourceVersion, which makes
// the API server refuse it with a conflict if the node changed meanwhile.
func mergePatch(before, after *corev1.Node) ([]byte, error) {
	meta := map[string]any{"resourceVersion": before.ResourceVersion}
	if d := mapPatch(before.Labels, after.Labels); d != nil {
		meta["labels"] = d
	}
	if d := mapPatch(before.Annotations, after.Annotations); d != nil {
		meta["annotations"] = d
	}
	spec := map[string]any{}
	if before.Spec.Unschedulable != after.Spec.Unschedulable {
		spec["unschedulable"] = after.Spec.Unschedulable
	}
	if !apiequality.Semantic.DeepEqual(before.Spec.Taints, after.Spec.Taints) {
		if len(after.Spec.Taints) == 0 {
			spec["taints"] = nil
		} else {
			spec["taints"] = after.Spec.Taints
		}
	}
	p := map[string]any{"metadata": meta}
	if len(spec) > 0 {
		p["spec"] = spec
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding node patch: %w", err)
	}
	return b, nil
}

// mapPatch sets changed keys and nulls removed ones; nil when equal.
func mapPatch(before, after map[string]string) map[string]any {
	d := map[string]any{}
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			d[k] = v
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d[k] = nil
		}
	}
	if len(d) == 0 {
		return nil
	}
	return d
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

func equalNode(a, b *corev1.Node) bool {
	return a.Spec.Unschedulable == b.Spec.Unschedulable &&
		apiequality.Semantic.DeepEqual(a.Spec.Taints, b.Spec.Taints) &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
}
