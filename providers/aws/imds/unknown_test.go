package imds

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

// A scheduled event in a state IMDS may add one day sits beside an active
// one: the active one is acted on, and the unknown one is logged and
// counted, without failing the read.
func TestMaintenanceUnknownStateBesideValidEvent(t *testing.T) {
	t.Parallel()
	const doc = `[
  {"NotBefore":"3 Feb 2030 04:05:06 GMT","Code":"system-reboot","Description":"scheduled reboot","EventId":"instance-event-0000000000000000a","NotAfter":"3 Feb 2030 05:05:06 GMT","State":"postponed"},
  {"NotBefore":"4 Feb 2030 04:05:06 GMT","Code":"instance-retirement","Description":"retirement","EventId":"instance-event-0000000000000000b","NotAfter":"5 Feb 2030 04:05:06 GMT","State":"active"}
]`
	s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandEvents})
	proxy := newFaultProxy(t, s.URL())
	proxy.inject("/latest/meta-data/"+maintenancePath, answer(http.StatusOK, doc))
	addr := closedAddr(t)
	proxy.serve(t, addr)
	var logs interruptiontest.Log
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), nil))
	health := interruptiontest.NewHealth()
	o := Options{Endpoint: "http://" + addr, Interval: pollInterval, Signals: []string{SignalScheduledMaintenance}}
	sources, err := Sources(NewClient(o, nil), o, health, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, sources)
	const source = sourcePrefix + SignalScheduledMaintenance

	r, n := health.WaitFor(t, "a read", 0, 1, func(r interruptiontest.Record) bool { return r.Source == source })
	if !r.OK {
		t.Fatalf("the read failed (%s: %v): an unknown state beside a valid event must not spoil the answer", r.Reason, r.Err)
	}
	e := next(t, out)
	want := interruption.NewID(interruption.KindScheduledMaintenance, "instance-event-0000000000000000b")
	if e.ID != want || e.Action != interruption.ActionDrain || !e.Deadline.Equal(date("2030-02-04T04:05:06Z")) {
		t.Errorf("event %+v, want a drain of %s by 2030-02-04T04:05:06Z", e, want)
	}
	health.WaitFor(t, "more reads", n, 2, interruptiontest.Success(source))
	quiet(t, out, 2*pollInterval)
	if got := health.Unknowns(source); got == 0 {
		t.Error("the unknown state was not counted")
	}
	if l := logs.String(); !strings.Contains(l, "postponed") || !strings.Contains(l, "instance-event-0000000000000000a") {
		t.Errorf("no log names the unknown state and its event:\n%s", l)
	}
	if c := strings.Count(logs.String(), "postponed"); c != 1 {
		t.Errorf("the unknown state logged %d times over several reads, want once", c)
	}
}
