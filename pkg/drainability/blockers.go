package drainability

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lastcall/lastcall/pkg/plan"
)

// blockers are a plan's blocked pods by reason: pod (namespace/name) to
// the details of its blockers of that reason.
type blockers map[plan.Reason]map[string][]string

func blockersOf(p plan.Plan) blockers {
	b := blockers{}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			for _, x := range pod.Blockers {
				if b[x.Reason] == nil {
					b[x.Reason] = map[string][]string{}
				}
				key := pod.Namespace + "/" + pod.Name
				b[x.Reason][key] = append(b[x.Reason][key], x.Detail)
			}
		}
	}
	return b
}

// key identifies the set of (reason, pod), details left out: a detail that
// changes alone (a shorter window left for grace) is no new blocker.
func (b blockers) key() string {
	var parts []string
	for _, r := range plan.Reasons {
		if len(b[r]) > 0 {
			parts = append(parts, string(r)+"="+strings.Join(slices.Sorted(maps.Keys(b[r])), ","))
		}
	}
	return strings.Join(parts, " ")
}

// message lists the reasons and up to podsPerReason pods each, e.g.
// "a drain now would be blocked or degraded: pdb-allows-no-disruption:
// ns/web-1 (PodDisruptionBudget web allows 0 disruptions); no-controller:
// ns/bare (no controller recreates it)".
func (b blockers) message() string {
	var parts []string
	for _, r := range plan.Reasons {
		if len(b[r]) == 0 {
			continue
		}
		pods := slices.Sorted(maps.Keys(b[r]))
		var named []string
		for _, p := range pods[:min(len(pods), podsPerReason)] {
			named = append(named, p+" ("+strings.Join(b[r][p], ", ")+")")
		}
		s := string(r) + ": " + strings.Join(named, ", ")
		if more := len(pods) - podsPerReason; more > 0 {
			s += fmt.Sprintf(" and %d more", more)
		}
		parts = append(parts, s)
	}
	msg := "a drain now would be blocked or degraded: " + strings.Join(parts, "; ")
	if len(msg) > maxMessage {
		msg = strings.ToValidUTF8(msg[:maxMessage-len("…")], "") + "…"
	}
	return msg
}
