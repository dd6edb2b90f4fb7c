package drain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Outcome is how a drain ended. Metric labels, Events and the state
// recorded on the node derive from it.
type Outcome string

// The outcomes of a drain.
const (
	// Drained: every evictable pod is gone.
	Drained Outcome = "success"
	// DryRun: nothing was changed; the pods were only listed.
	DryRun Outcome = "dry_run"
	// TimedOut: the deadline passed with pods remaining.
	TimedOut Outcome = "timeout"
	// Cancelled: the drain was stopped (its notice withdrawn, the node
	// gone, lastcall shutting down).
	Cancelled Outcome = "cancelled"
	// Failed: the drain could not go on (the pods could not be listed, a
	// pod could not be deleted past its budget).
	Failed Outcome = "failure"
	// NodeGone: the node was deleted while it was drained. A drain alone
	// never ends so; package episode tells it.
	NodeGone Outcome = "node_gone"
	// CordonOnly: no drain was asked for (--cordon-only): the node is held
	// and its pods go with it. Package episode tells it; it is not in
	// Outcomes, as no drain ends so.
	CordonOnly Outcome = "cordon_only"
)

// Outcomes lists every outcome, for metrics that start every series at 0.
var Outcomes = []Outcome{Drained, DryRun, TimedOut, Cancelled, Failed, NodeGone}

// Label is the outcome as a bounded metric label.
func (o Outcome) Label() string { return string(o) }

// Finished says whether the node is empty of what a drain evicts.
func (o Outcome) Finished() bool { return o == Drained }

// Result says what a drain did.
type Result struct {
	Outcome Outcome
	Evicted int
	// Skipped counts pods left in place, by rule.
	Skipped map[string]int
	// Remaining are the pods (namespace/name) still there when the drain
	// ended early.
	Remaining []string
	// Overridden are the pods deleted despite their PodDisruptionBudget
	// (graceful-override), as namespace/name.
	Overridden []string
	// Kept are the pods left on the node by their annotation
	// (AnnotationSkipEviction), as namespace/name.
	Kept []string
	// Deadline is the deadline the drain worked to at its end.
	Deadline time.Time
}

// ErrDeadline is returned when the deadline passed with pods remaining.
var ErrDeadline = errors.New("drain deadline passed with pods remaining")

// OutcomeOf classifies how a drain that returned err ended.
func OutcomeOf(dryRun bool, err error) Outcome {
	switch {
	case err == nil && dryRun:
		return DryRun
	case err == nil:
		return Drained
	case errors.Is(err, ErrDeadline):
		return TimedOut
	case errors.Is(err, context.Canceled):
		return Cancelled
	default:
		return Failed
	}
}

// Summary says what a drain did, for Events: "14 pods evicted, 1 deleted
// past its PodDisruptionBudget (shop/db-0), left in place: 2 daemonset".
func (r Result) Summary() string {
	s := fmt.Sprintf("%d pods evicted", r.Evicted-len(r.Overridden))
	if n := len(r.Overridden); n > 0 {
		s += fmt.Sprintf(", %d deleted past its PodDisruptionBudget (%s)", n, strings.Join(r.Overridden[:min(n, 5)], ", "))
	}
	var left []string
	for _, rule := range []string{RuleAnnotated, "daemonset", "mirror", "self", "completed"} {
		n := r.Skipped[rule]
		switch {
		case n == 0:
		case rule == RuleAnnotated && len(r.Kept) > 0:
			left = append(left, fmt.Sprintf("%d annotated %s (%s)", n, AnnotationSkipEviction, strings.Join(r.Kept[:min(len(r.Kept), 5)], ", ")))
		default:
			left = append(left, fmt.Sprintf("%d %s", n, rule))
		}
	}
	if len(left) > 0 {
		s += ", left in place: " + strings.Join(left, ", ")
	}
	return s
}
