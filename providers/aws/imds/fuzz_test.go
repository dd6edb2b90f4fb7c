package imds

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// maxErrorLen bounds the error of any answer: the body and the values quoted
// from it are cut to bodyExcerpt bytes, which %q may escape up to six-fold.
const maxErrorLen = 16*bodyExcerpt + 512

// FuzzParseSignals checks what each parser makes of any answer: no panic,
// the same every time, a failure that is a malformed one and whose error
// names the path and stays short however long the answer, and complete
// events that agree with the answer. The seeds are the golden payloads of
// every signal.
func FuzzParseSignals(f *testing.F) {
	for _, dir := range []string{"spot", "rebalance", "maintenance", "asglifecycle"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, p := range []struct {
			path  string
			parse func([]byte) ([]interruption.Event, error)
			check func(*testing.T, []byte, []interruption.Event)
		}{
			{spotPath, parseSpot, checkSpot},
			{rebalancePath, func(b []byte) ([]interruption.Event, error) { return parseRebalance(b, interruption.ActionDrain) }, checkRebalance},
			{maintenancePath, func(b []byte) ([]interruption.Event, error) {
				events, unknown, err := parseMaintenance(b)
				for _, u := range unknown {
					if u.Field != "State" || knownMaintenanceState(u.Value) || u.Entry == "" {
						t.Fatalf("maintenance: unknown value %+v from %q", u, b)
					}
				}
				return events, err
			}, checkMaintenance},
			{asgLifecyclePath, parseASGLifecycleEvents, checkASGLifecycle},
		} {
			events, err := p.parse(body)
			again, againErr := p.parse(body)
			if !reflect.DeepEqual(events, again) || errString(err) != errString(againErr) {
				t.Fatalf("%s: not deterministic for %q: %+v, %v then %+v, %v", p.path, body, events, err, again, againErr)
			}
			if err != nil {
				checkMalformed(t, p.path, body, events, err)
				continue
			}
			for _, e := range events {
				if e.ID == "" || e.Kind == "" || e.Action == "" || e.Detail == "" {
					t.Fatalf("%s: incomplete event %+v from %q", p.path, e, body)
				}
				if e.Source != "" || !e.Observed.IsZero() {
					t.Fatalf("%s: the parser set Source or Observed: %+v", p.path, e)
				}
			}
			p.check(t, body, events)
		}
	})
}

// parseASGLifecycleEvents adapts parseASGLifecycle to the shape of the
// other parsers: one event naming the state, of kind ASG termination when
// the state means it.
func parseASGLifecycleEvents(body []byte) ([]interruption.Event, error) {
	state, terminating, err := parseASGLifecycle(body)
	if err != nil {
		return nil, err
	}
	action := interruption.ActionNotify
	if terminating {
		action = interruption.ActionDrain
	}
	return []interruption.Event{{ID: interruption.NewID(interruption.KindASGTermination, state),
		Kind: interruption.KindASGTermination, Action: action, Detail: state}}, nil
}

func checkMalformed(t *testing.T, path string, body []byte, events []interruption.Event, err error) {
	t.Helper()
	if events != nil {
		t.Fatalf("%s: events %+v with error %v", path, events, err)
	}
	if r := interruption.ReasonOf(err); r != interruption.ReasonMalformed {
		t.Fatalf("%s: reason %q for %q: %v", path, r, body, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, path) {
		t.Fatalf("error %q does not name the path %s", msg, path)
	}
	if len(msg) > maxErrorLen {
		t.Fatalf("%s: error of %d bytes for a body of %d", path, len(msg), len(body))
	}
}

func checkSpot(t *testing.T, body []byte, events []interruption.Event) {
	if len(events) != 1 {
		t.Fatalf("spot: %d events from %q", len(events), body)
	}
	e := events[0]
	if e.Kind != interruption.KindSpotInterruption || e.Action != interruption.ActionDrain || e.Deadline.IsZero() {
		t.Fatalf("spot: %+v from %q; want a drain by the notice's time", e, body)
	}
}

func checkRebalance(t *testing.T, body []byte, events []interruption.Event) {
	if len(events) != 1 {
		t.Fatalf("rebalance: %d events from %q", len(events), body)
	}
	if e := events[0]; e.Kind != interruption.KindRebalance || e.Action != interruption.ActionDrain || !e.Deadline.IsZero() {
		t.Fatalf("rebalance: %+v from %q; want the configured action and no deadline", e, body)
	}
}

func checkMaintenance(t *testing.T, body []byte, events []interruption.Event) {
	var list []struct{ State string }
	err := json.Unmarshal(body, &list)
	known := 0
	for _, se := range list {
		if knownMaintenanceState(se.State) {
			known++
		}
	}
	if err != nil || known != len(events) {
		t.Fatalf("maintenance: %d events from %q (%v); want one per entry in a known state", len(events), body, err)
	}
	for _, e := range events {
		if e.Kind != interruption.KindScheduledMaintenance {
			t.Fatalf("maintenance: kind %s from %q", e.Kind, body)
		}
		switch e.Action {
		case interruption.ActionDrain:
			if e.Deadline.IsZero() {
				t.Fatalf("maintenance: a drain without NotBefore from %q: %+v", body, e)
			}
		case interruption.ActionCancel:
			if !e.Deadline.IsZero() {
				t.Fatalf("maintenance: a cancel with a deadline from %q: %+v", body, e)
			}
		default:
			t.Fatalf("maintenance: action %s from %q", e.Action, body)
		}
	}
}

func knownMaintenanceState(s string) bool {
	return s == "active" || s == "completed" || s == "canceled"
}

func checkASGLifecycle(t *testing.T, body []byte, events []interruption.Event) {
	state := strings.TrimSpace(string(body))
	if len(events) != 1 || events[0].Detail != state {
		t.Fatalf("asg lifecycle: %+v from %q", events, body)
	}
	terminating := state == "Terminated" || state == "Warmed:Terminated"
	if (events[0].Action == interruption.ActionDrain) != terminating {
		t.Fatalf("asg lifecycle: state %q read as terminating=%v", state, !terminating)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
