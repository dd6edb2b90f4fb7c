// Package render prints a plan.Plan: a table for people, JSON for tools.
// Every time in the table is relative to the plan's Now, so that the same
// cluster planned at another moment prints the same table.
package render

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/pkg/plan"
)

// The output formats.
const (
	FormatTable = "table"
	// FormatWide is the table with more columns: when a budget gives way,
	// and what kubectl drain would do with each pod, when known.
	FormatWide = "wide"
	FormatJSON = "json"
	FormatYAML = "yaml"
)

// Formats lists the output formats.
var Formats = []string{FormatTable, FormatWide, FormatJSON, FormatYAML}

// Write prints p in format (one of Formats).
func Write(w io.Writer, p plan.Plan, format string) error {
	switch format {
	case FormatTable:
		return Table(w, p)
	case FormatWide:
		return Wide(w, p)
	case FormatJSON:
		return JSON(w, p)
	case FormatYAML:
		return YAML(w, p)
	default:
		return fmt.Errorf("unknown output format %q; known: %s", format, strings.Join(Formats, ", "))
	}
}

// JSON prints p as indented JSON, durations in seconds.
func JSON(w io.Writer, p plan.Plan) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the plan: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// YAML prints p as YAML, with JSON's field names.
func YAML(w io.Writer, p plan.Plan) error {
	b, err := json.Marshal(p)
	if err == nil {
		b, err = yaml.JSONToYAML(b)
	}
	if err != nil {
		return fmt.Errorf("encoding the plan: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// The sections of the table that list pods by blocker.
const (
	headingBudgets      = "PodDisruptionBudgets allowing 0 disruptions"
	headingNoController = "Pods with no controller (they will not come back)"
	headingEmptyDir     = "Pods with emptyDir data (it will be lost)"
	headingShutdown     = "Pods behind a Service without a preStop hook, or whose grace does not fit the deadline"
	headingLastEndpoint = "Pods that are the last ready endpoints of a Service (it answers 503 until replacements are ready)"
	headingOneAtATime   = "Services whose every ready endpoint is on the node (their pods go one at a time, each once a replacement is ready elsewhere)"
	headingNode         = "The node as a whole"
	headingSkipped      = "Skipped"
)

// Table prints p for people: a header, the eviction groups, a section per
// kind of blocker, the pods left alone, and whether the drain fits.
func Table(w io.Writer, p plan.Plan) error {
	return write(w, p, false)
}

// Wide is Table with more columns: when each pod's budget gives way, and,
// when p holds it, what kubectl drain would do with each pod.
func Wide(w io.Writer, p plan.Plan) error {
	return write(w, p, true)
}

func write(w io.Writer, p plan.Plan, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	t := table{w: tw, now: p.Now}
	kubectl := wide && p.KubectlDrain != nil
	// kubectlCol is the KUBECTL DRAIN column's cell, when it is shown.
	kubectlCol := func(cell string) string {
		if !kubectl {
			return ""
		}
		return "\t" + cell
	}

	t.line("Node:\t%s", p.Node)
	t.line("Planned at:\t%s", p.Now.UTC().Format(time.RFC3339))
	if p.Deadline.IsZero() {
		t.line("Deadline:\tnone")
	} else {
		t.line("Deadline:\t%s (in %s)", p.Deadline.UTC().Format(time.RFC3339), p.Deadline.Sub(p.Now).Round(time.Second))
	}
	t.line("PDB deadline policy:\t%s", p.Policy)
	t.line("Deadline margin:\t%s", p.Margin)
	t.line("LB deregistration delay:\t%s", p.LBDelay)

	if len(p.Groups) == 0 {
		t.section("Eviction groups")
		t.none()
	}
	for i, g := range p.Groups {
		if g.End.IsZero() {
			t.section("Group %d of %d: %s, evicted from %s", i+1, len(p.Groups), g.Name, t.rel(g.Start))
		} else {
			t.section("Group %d of %d: %s, evicted from %s, gone by %s", i+1, len(p.Groups), g.Name, t.rel(g.Start), t.rel(g.End))
		}
		header := "NAMESPACE/NAME\tCONTROLLER\tGRACE\tCLAMPED"
		if wide {
			header += "\tOVERRIDE AT"
		}
		t.line("%s", header+"\tBLOCKERS"+kubectlCol("KUBECTL DRAIN"))
		for _, pod := range g.Pods {
			row := fmt.Sprintf("%s\t%s\t%s\t%s", pod.Namespace+"/"+pod.Name, orDash(pod.Controller), pod.Grace, pod.Clamped)
			if wide {
				at := "-"
				if pod.OverrideAt != nil {
					at = t.rel(*pod.OverrideAt)
				}
				row += "\t" + at
			}
			t.line("%s", row+"\t"+t.blockers(pod)+kubectlCol(orDash(pod.KubectlDrain)))
		}
	}

	t.section(headingBudgets)
	if len(p.Budgets) == 0 {
		t.none()
	} else {
		t.line("NAMESPACE/NAME\tPODS")
		for _, b := range p.Budgets {
			t.line("%s\t%s", b.Namespace+"/"+b.Name, strings.Join(b.Pods, ", "))
		}
	}

	byReason := blocked(p)
	t.section(headingNoController)
	t.pods(byReason, false, plan.ReasonNoController)
	t.section(headingEmptyDir)
	t.pods(byReason, false, plan.ReasonEmptyDir)
	t.section(headingShutdown)
	t.pods(byReason, true, plan.ReasonNoPreStop, plan.ReasonGraceTooLong)
	if len(byReason[plan.ReasonOnlyEndpoint]) > 0 {
		t.section(headingLastEndpoint)
		t.pods(byReason, false, plan.ReasonOnlyEndpoint)
	}
	if len(p.NodeBlockers) > 0 {
		t.section(headingNode)
		for _, b := range p.NodeBlockers {
			t.line("  %s: %s", b.Reason, b.Detail)
		}
	}
	if len(p.OneAtATime) > 0 {
		t.section(headingOneAtATime)
		for _, s := range p.OneAtATime {
			t.line("  %s", s)
		}
	}

	if len(p.Terminating) > 0 {
		t.section("Already terminating (the first group waits for them)")
		t.line("%s", "NAMESPACE/NAME"+kubectlCol("KUBECTL DRAIN"))
		for _, s := range p.Terminating {
			t.line("%s", s.Namespace+"/"+s.Name+kubectlCol(orDash(s.KubectlDrain)))
		}
	}

	t.section(headingSkipped)
	if len(p.Skipped) == 0 {
		t.none()
	} else {
		t.line("%s", "NAMESPACE/NAME\tRULE"+kubectlCol("KUBECTL DRAIN"))
		for _, s := range p.Skipped {
			t.line("%s", s.Namespace+"/"+s.Name+"\t"+s.Rule+kubectlCol(orDash(s.KubectlDrain)))
		}
	}
	if kubectl {
		t.section("kubectl drain (%s)", p.KubectlDrain.Command)
		if len(p.KubectlDrain.Refused) == 0 {
			t.line("  would go ahead")
		}
		for _, r := range p.KubectlDrain.Refused {
			t.line("  refuses the node: %s", r)
		}
	}

	t.line("")
	verdict := "fits"
	if !p.Fits {
		verdict = "does NOT fit"
	}
	if p.Deadline.IsZero() {
		t.line("Estimated finish: %s (no deadline): %s", t.rel(p.Finish), verdict)
	} else {
		end := p.Deadline.Add(-time.Duration(p.Margin))
		t.line("Estimated finish: %s of %s (deadline less margin at %s): %s",
			t.rel(p.Finish), p.Deadline.Sub(p.Now).Round(time.Second), t.rel(end), verdict)
	}
	for _, problem := range p.Problems {
		t.line("  - %s", problem)
	}
	if t.err != nil {
		return t.err
	}
	return tw.Flush()
}

// table writes lines to a tabwriter, keeping the first error.
type table struct {
	w   io.Writer
	now time.Time
	err error
}

func (t *table) line(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format+"\n", args...)
	}
}

func (t *table) section(format string, args ...any) {
	t.line("")
	t.line(format, args...)
}

func (t *table) none() { t.line("  none") }

// rel is a time as an offset from the plan's now: "+1m25s".
func (t *table) rel(at time.Time) string {
	d := at.Sub(t.now).Round(time.Second)
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

// blockers are a pod's reasons, each once, in the order of plan.Reasons,
// with the budget override time when there is one.
func (t *table) blockers(pod plan.Pod) string {
	var out []string
	for _, r := range plan.Reasons {
		if !slices.ContainsFunc(pod.Blockers, func(b plan.Blocker) bool { return b.Reason == r }) {
			continue
		}
		s := string(r)
		if r == plan.ReasonPDB && pod.OverrideAt != nil {
			s += " (overridden at " + t.rel(*pod.OverrideAt) + ")"
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// pods lists the pods blocked for any of reasons, with the blockers'
// details (and reasons, if withReason).
func (t *table) pods(byReason map[plan.Reason][]blockedPod, withReason bool, reasons ...plan.Reason) {
	var rows []blockedPod
	for _, r := range reasons {
		rows = append(rows, byReason[r]...)
	}
	if len(rows) == 0 {
		t.none()
		return
	}
	// Stable: a pod's blockers keep the order of reasons.
	slices.SortStableFunc(rows, func(a, b blockedPod) int { return cmp.Compare(a.pod, b.pod) })
	if withReason {
		t.line("NAMESPACE/NAME\tREASON\tDETAIL")
	} else {
		t.line("NAMESPACE/NAME\tDETAIL")
	}
	for _, r := range rows {
		if withReason {
			t.line("%s\t%s\t%s", r.pod, r.Reason, r.Detail)
		} else {
			t.line("%s\t%s", r.pod, r.Detail)
		}
	}
}

// blockedPod is one blocker of one pod.
type blockedPod struct {
	pod string // namespace/name
	plan.Blocker
}

// blocked groups the blockers of every pod of p by reason.
func blocked(p plan.Plan) map[plan.Reason][]blockedPod {
	out := map[plan.Reason][]blockedPod{}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			for _, b := range pod.Blockers {
				out[b.Reason] = append(out[b.Reason], blockedPod{pod: pod.Namespace + "/" + pod.Name, Blocker: b})
			}
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
