package azure

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// FuzzParseDocumentFor checks, beyond FuzzParseDocument, parseDocument for
// any VM name and either Freeze setting: the same answer every time; an
// error that names the endpoint and stays short; for a VM, exactly the
// events of the whole document that list it; Freeze drained only when
// asked; one notice per EventId. The seeds are every document of testdata/.
func FuzzParseDocumentFor(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		body := readTestdata(f, filepath.Base(file))
		f.Add(body, "", false)
		f.Add(body, "vm1", true)
		f.Add(body, "VM1", false)
	}
	f.Fuzz(func(t *testing.T, body []byte, vmName string, drainFreeze bool) {
		got, unknown, err := parseDocument(body, vmName, drainFreeze, parseNow())
		again, againUnknown, againErr := parseDocument(body, vmName, drainFreeze, parseNow())
		if !reflect.DeepEqual(got, again) || !reflect.DeepEqual(unknown, againUnknown) ||
			(err == nil) != (againErr == nil) || (err != nil && err.Error() != againErr.Error()) {
			t.Fatalf("not deterministic for %q", body)
		}
		all, _, allErr := parseDocument(body, "", drainFreeze, parseNow())
		other, _, otherErr := parseDocument(body, vmName, !drainFreeze, parseNow())
		if (err == nil) != (allErr == nil) || (err == nil) != (otherErr == nil) {
			// A document is malformed whatever the VM and the Freeze setting.
			t.Fatalf("malformed for some settings only: %v / %v / %v", err, allErr, otherErr)
		}
		if err != nil {
			if got != nil || unknown != nil {
				t.Fatalf("notices %+v and unknown values %+v with error %v", got, unknown, err)
			}
			if r := interruption.ReasonOf(err); r != interruption.ReasonMalformed {
				t.Fatalf("reason %q: %v", r, err)
			}
			if msg := err.Error(); !strings.Contains(msg, eventsPath) || len(msg) > 16*bodyExcerpt+512 {
				t.Fatalf("error of %d bytes does not name %s, or is not cut: %q", len(msg), eventsPath, msg)
			}
			return
		}

		// For a VM: the events of the whole document that list it, in order.
		var mine []notice
		for _, n := range all {
			if vmName == "" || slices.ContainsFunc(n.resources, func(r string) bool { return strings.EqualFold(r, vmName) }) {
				mine = append(mine, n)
			}
		}
		if !reflect.DeepEqual(got, mine) && !(len(got) == 0 && len(mine) == 0) {
			t.Fatalf("for VM %q:\n%+v\nwant the document's events that list it:\n%+v", vmName, got, mine)
		}

		for _, u := range unknown {
			_, _, knownType := kindOf(u.Value, drainFreeze)
			switch {
			case u.Entry == "":
				t.Fatalf("unknown value %+v names no event", u)
			case u.Field == "EventType" && knownType, u.Field == "EventStatus" && (u.Value == statusScheduled || u.Value == statusStarted):
				t.Fatalf("a known value reported unknown: %+v", u)
			case u.Field != "EventType" && u.Field != "EventStatus":
				t.Fatalf("unknown value of field %q", u.Field)
			}
		}

		seen := map[string]bool{}
		for i, n := range got {
			e := n.event
			if n.eventID == "" || seen[n.eventID] {
				t.Fatalf("EventId %q empty or listed twice", n.eventID)
			}
			seen[n.eventID] = true
			if e.ID != interruption.NewID(e.Kind, n.eventID) || e.Deadline.IsZero() || e.Detail == "" {
				t.Fatalf("incomplete notice %+v", n)
			}
			if e.Source != "" || !e.Observed.IsZero() {
				t.Fatalf("the parser set Source or Observed: %+v", e)
			}
			// Only the action of a Freeze depends on drainFreeze.
			o := other[i].event
			freeze := e.Action != o.Action
			if freeze && (e.Kind != interruption.KindHostMaintenance || !strings.Contains(e.Detail, "Freeze")) {
				t.Fatalf("drainFreeze changes %+v into %+v", e, o)
			}
			if e.Action == interruption.ActionNotify && drainFreeze {
				t.Fatalf("a notify with Freeze drained: %+v", e)
			}
		}
	})
}
