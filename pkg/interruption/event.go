// Package interruption defines what every signal source produces: an Event
// saying that this node will be taken away, by when, and what to do about it.
package interruption

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Kind names the cloud signal behind an event. Each kind has its own taint
// key on the node, so operators can tell at a glance why a node is cordoned.
type Kind string

// The kinds lastcall knows. The string is used in taint keys, metric labels
// and Events, so it must stay short, lower-case and stable.
const (
	KindSpotInterruption     Kind = "spot-interruption"
	KindRebalance            Kind = "rebalance-recommendation"
	KindScheduledMaintenance Kind = "scheduled-maintenance"
	KindASGTermination       Kind = "asg-termination"
	// KindPreemption is a GCE preemptible or spot VM being preempted, or
	// an Azure Spot VM being evicted (Preempt).
	KindPreemption Kind = "preemption"
	// KindHostMaintenance is host maintenance that stops or restarts the
	// VM (GCE TERMINATE_ON_HOST_MAINTENANCE, Azure Reboot and Redeploy),
	// or one that only pauses or migrates it (with ActionNotify).
	KindHostMaintenance Kind = "host-maintenance"
	// KindTermination is the VM being deleted (Azure Terminate).
	KindTermination Kind = "termination"
)

// Action says what an event asks lastcall to do.
type Action string

const (
	// ActionCordon taints and cordons the node and takes it out of load
	// balancers, but leaves its pods running.
	ActionCordon Action = "cordon"
	// ActionDrain cordons the node and then evicts its pods.
	ActionDrain Action = "drain"
	// ActionNotify records the notice (an Event and a metric) and changes
	// nothing: the VM survives it (a live migration, a short freeze).
	ActionNotify Action = "notify"
	// ActionCancel undoes what lastcall did for the event with the same ID:
	// the cloud withdrew the notice. Sources may send it for IDs lastcall
	// never acted on (IMDS lists finished events for days, and a restarted
	// agent cannot know which it saw); consumers ignore those.
	ActionCancel Action = "cancel"
)

// Event is one observed interruption notice.
type Event struct {
	// ID is derived from the notice's content (see NewID), so the same
	// notice seen on every poll is the same event.
	ID string
	// Source is the name of the Source that saw it.
	Source string
	Kind   Kind
	Action Action
	// Deadline is when the cloud will take the node away. Zero when the
	// notice does not say; the agent then applies its fallback deadline.
	Deadline time.Time
	// Observed is when lastcall first saw the notice.
	Observed time.Time
	// Issued is when the cloud issued the notice, when it says (a
	// rebalance recommendation's noticeTime); zero otherwise.
	Issued time.Time
	// Detail is a short human description for Events and logs.
	Detail string
}

// NewID derives a stable event ID from the parts of a notice that identify
// it: the kind plus, for example, the notice's own time or event ID. It never
// includes the time lastcall saw it, so that repeated polls of one notice
// yield one ID.
func NewID(kind Kind, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return string(kind) + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// ShortID is the part of an ID after its kind, fit for a taint value.
func ShortID(id string) string {
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// Source watches one signal and sends the events it sees.
type Source interface {
	// Name is a short, stable name used in logs and as a metric label.
	Name() string
	// Run watches until ctx ends, sending events to out. It does not
	// return on errors of the signal itself: those are counted, logged and
	// retried. It returns ctx.Err() when ctx ends.
	Run(ctx context.Context, out chan<- Event) error
}
