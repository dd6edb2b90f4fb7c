package episode

import (
	"fmt"
	"strings"
	"time"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/node"
)

// describe tells a notice in an Event: "spot instance-action terminate at
// ...; node goes at ...; action drain".
func describe(ev interruption.Event) string {
	s := ev.Detail
	if !ev.Deadline.IsZero() {
		s += fmt.Sprintf("; node goes at %s", ev.Deadline.UTC().Format(time.RFC3339))
	}
	return s + "; action " + string(ev.Action)
}

// changes tells what a hold or a release changed on the node.
func changes(ch node.Change) string {
	var parts []string
	for _, c := range []struct {
		on   bool
		what string
	}{{ch.Tainted, "tainted"}, {ch.Cordoned, "cordoned"}, {ch.LBExcluded, "load-balancer label added"},
		{ch.Untainted, "taint removed"}, {ch.Uncordoned, "uncordoned"}, {ch.LBRestored, "load-balancer label removed"}} {
		if c.on {
			parts = append(parts, c.what)
		}
	}
	if len(parts) == 0 {
		return "nothing to change"
	}
	return strings.Join(parts, ", ")
}

// joinFirst joins the first n of s.
func joinFirst(s []string, n int) string { return strings.Join(s[:min(len(s), n)], ", ") }
