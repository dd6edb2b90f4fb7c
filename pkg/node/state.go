// Package node is lastcall's node-scoped client: it taints, cordons and
// labels a node for an interruption, and records on the node itself exactly
// what lastcall changed, so that it can later undo that and nothing else,
// even after a restart of lastcall or of the node.
package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall/lastcall/pkg/interruption"
)

const (
	// AnnotationState holds lastcall's State as JSON.
	AnnotationState = "lastcall.io/state"
	// LabelExcludeLB takes the node out of external load balancers.
	LabelExcludeLB = "node.kubernetes.io/exclude-from-external-load-balancers"
	// TaintPrefix starts every taint key lastcall sets; the kind follows.
	TaintPrefix = "lastcall.io/"
)

// Ref is the reference Events about a node use (the kubelet's form: the
// node's name as its UID).
func Ref(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}
}

// TaintKey is the taint key for an interruption kind.
func TaintKey(k interruption.Kind) string { return TaintPrefix + string(k) }

// stateVersion is the version of State this lastcall writes. A state of a
// later version is unreadable: lastcall does not guess what a newer one
// meant.
const stateVersion = 2

// State is what lastcall did to a node, stored in AnnotationState.
type State struct {
	// Version is stateVersion; 0 for a state written before versions.
	Version int `json:"version,omitempty"`
	// Holds are the interruptions currently holding the node cordoned.
	Holds []Hold `json:"holds"`
	// Cordoned is true when lastcall set spec.unschedulable (it was not
	// set before), so uncordoning is lastcall's to do.
	Cordoned bool `json:"cordoned,omitempty"`
	// LBExcluded is true when lastcall added LabelExcludeLB.
	LBExcluded bool `json:"lbExcluded,omitempty"`
	// Tainted are the taint keys lastcall added (they were not there
	// before), so removing them is lastcall's to do.
	Tainted []string `json:"tainted,omitempty"`
}

// ErrUnreadable says a node's AnnotationState cannot be read: not JSON,
// cut short, or written by a newer lastcall. lastcall then holds nothing of
// the node's, and undoes nothing it cannot prove it did.
var ErrUnreadable = errors.New("lastcall state unreadable")

// Owner is who made a hold: the mode of lastcall that acted on the notice.
// Each owner releases only its own holds.
type Owner string

// The owners of holds.
const (
	// OwnerAgent: the node agent, from the instance's metadata.
	OwnerAgent Owner = "agent"
	// OwnerQueue: the queue processor, from a queue message.
	OwnerQueue Owner = "queue"
)

// Hold is one interruption lastcall acted on.
type Hold struct {
	ID     string              `json:"id"`
	Kind   interruption.Kind   `json:"kind"`
	Action interruption.Action `json:"action"`
	// Owner made the hold and alone releases it. Holds recorded before
	// owners were have none, and no owner releases them.
	Owner    Owner      `json:"owner,omitempty"`
	Since    time.Time  `json:"since"`
	Deadline *time.Time `json:"deadline,omitempty"`
	// Drain is empty until a drain finishes, then how it ended (a
	// drain.Outcome).
	Drain   string     `json:"drain,omitempty"`
	DrainAt *time.Time `json:"drainAt,omitempty"`
	// Carry, when set, says the notice is carried on from the node alone:
	// nothing else records it any more (its queue message was deleted
	// before its drain ended). Whoever holds the node's Lease carries it
	// on until its end, which clears this.
	Carry *Carry `json:"carry,omitempty"`
}

// Carry is what it takes to carry a notice on from its hold alone.
type Carry struct {
	// Instance is the cloud instance the node runs on.
	Instance string `json:"instance,omitempty"`
	// Detail is the notice's detail, for Events and logs.
	Detail string `json:"detail,omitempty"`
	// Step names what the cloud waits for at the notice's end (e.g.
	// "asg-lifecycle"), empty for nothing; Data is that step's own record
	// (e.g. the lifecycle action), opaque to this package.
	Step string          `json:"step,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// StateOf reads lastcall's state from a node. A node lastcall never touched
// has an empty state. An annotation that cannot be read is an error
// wrapping ErrUnreadable: lastcall does not guess what it owns.
func StateOf(n *corev1.Node) (State, error) {
	var s State
	raw, ok := n.Annotations[AnnotationState]
	if !ok || raw == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return State{}, fmt.Errorf("node %s: annotation %s: %w: %w", n.Name, AnnotationState, ErrUnreadable, err)
	}
	if s.Version > stateVersion {
		return State{}, fmt.Errorf("node %s: annotation %s: %w: written by a newer lastcall (version %d; this one reads %d)",
			n.Name, AnnotationState, ErrUnreadable, s.Version, stateVersion)
	}
	if s.Version == 0 {
		// Before versions, a hold's taint was lastcall's unless another
		// hold of its kind remained: what it held for, it had tainted.
		for _, h := range s.Holds {
			if k := TaintKey(h.Kind); hasTaint(n, k) && !slices.Contains(s.Tainted, k) {
				s.Tainted = append(s.Tainted, k)
			}
		}
	}
	return s, nil
}

// Hold returns the hold with the given ID.
func (s *State) Hold(id string) (*Hold, bool) {
	for i := range s.Holds {
		if s.Holds[i].ID == id {
			return &s.Holds[i], true
		}
	}
	return nil, false
}

// Draining says whether a drain of the node is in progress: a hold asks
// for one and no outcome is recorded for it yet.
func (s *State) Draining() bool {
	for _, h := range s.Holds {
		if h.Action == interruption.ActionDrain && h.Drain == "" {
			return true
		}
	}
	return false
}

// Owned returns the holds of owner.
func (s *State) Owned(owner Owner) []Hold {
	var own []Hold
	for _, h := range s.Holds {
		if h.Owner == owner {
			own = append(own, h)
		}
	}
	return own
}

func (s *State) write(n *corev1.Node) error {
	if len(s.Holds) == 0 {
		delete(n.Annotations, AnnotationState)
		return nil
	}
	s.Version = stateVersion
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[AnnotationState] = string(b)
	return nil
}
