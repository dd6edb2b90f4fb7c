package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	testclock "k8s.io/utils/clock/testing"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/interruption/interruptiontest"
	"github.com/lastcall/lastcall/test/emulators/aemm"
)

const spotURLPath = "/latest/meta-data/" + spotPath

// TestUnreachableThenRecovers: nothing listens at the endpoint, then an
// IMDS appears there. The source reports "unreachable", keeps polling, and
// sends the notice once it can read it. With IMDSv2 only, the failing
// request is the SDK's token request, whose cause the SDK does not unwrap.
func TestUnreachableThenRecovers(t *testing.T) {
	t.Parallel()
	for _, v1 := range []bool{false, true} {
		name := map[bool]string{false: "imdsv2", true: "imdsv1-allowed"}[v1]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandSpot, IMDSv2Only: !v1})
			addr := closedAddr(t)
			health := newRecordingHealth()
			out := run(t, sourcesFor(t, "http://"+addr, Options{Signals: []string{SignalSpot}, AllowIMDSv1: v1}, health))

			_, seen := health.WaitFor(t, "unreachable", 0, 2, failure("imds-spot", interruption.ReasonUnreachable))
			if n, _ := health.Count(0, func(r interruptiontest.Record) bool {
				return !r.OK && r.Reason != string(interruption.ReasonUnreachable)
			}); n > 0 {
				t.Errorf("%d failures with another reason", n)
			}
			newFaultProxy(t, s.URL()).serve(t, addr)
			health.WaitFor(t, "success after recovery", seen, 1, success("imds-spot"))
			if e := next(t, out); e.Kind != interruption.KindSpotInterruption {
				t.Errorf("event %+v", e)
			}
		})
	}
}

// TestFaults puts a proxy in front of AEMM that breaks one answer, checks
// the reason reported, then repairs it and checks that the notice arrives.
func TestFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		path    string
		handler http.HandlerFunc
		reason  interruption.Reason
		v1      bool
	}{
		{"truncated JSON", spotURLPath, answer(http.StatusOK, `{"action":"terminate","ti`), interruption.ReasonMalformed, false},
		{"bad time", spotURLPath, answer(http.StatusOK, `{"action":"terminate","time":"soon"}`), interruption.ReasonMalformed, false},
		{"HTML page", spotURLPath, answer(http.StatusOK, "<html>oops</html>"), interruption.ReasonMalformed, false},
		{"500", spotURLPath, answer(http.StatusInternalServerError, "boom"), interruption.ReasonHTTP, false},
		{"500 with v1 allowed", spotURLPath, answer(http.StatusInternalServerError, "boom"), interruption.ReasonHTTP, true},
		{"403", spotURLPath, answer(http.StatusForbidden, "no"), interruption.ReasonHTTP, false},
		// A 404 from the token endpoint is an error, never "no notice".
		{"token 404", tokenPath, answer(http.StatusNotFound, "no"), interruption.ReasonHTTP, false},
		{"token 500", tokenPath, answer(http.StatusInternalServerError, "no"), interruption.ReasonHTTP, false},
		{"slow answer", spotURLPath, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		}, interruption.ReasonTimeout, false},
		{"slow token", tokenPath, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		}, interruption.ReasonTimeout, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startAEMM(t, aemm.Config{Subcommand: aemm.SubcommandSpot, IMDSv2Only: !tc.v1})
			proxy := newFaultProxy(t, s.URL())
			proxy.inject(tc.path, tc.handler)
			addr := closedAddr(t)
			proxy.serve(t, addr)
			health := newRecordingHealth()
			out := run(t, sourcesFor(t, "http://"+addr, Options{Signals: []string{SignalSpot}, AllowIMDSv1: tc.v1}, health))

			first, seen := health.WaitFor(t, string(tc.reason), 0, 1, failure("imds-spot", tc.reason))
			if n, _ := health.Count(0, func(r interruptiontest.Record) bool { return !r.OK && r.Reason != string(tc.reason) }); n > 0 {
				t.Errorf("%d failures with another reason", n)
			}
			if tc.reason == interruption.ReasonMalformed {
				if err := first.Err; err == nil || !strings.Contains(err.Error(), spotPath) {
					t.Errorf("malformed error %v does not name the path", err)
				}
			}
			select {
			case e := <-out:
				t.Fatalf("event %+v from a broken answer", e)
			default:
			}
			proxy.inject("", nil)
			health.WaitFor(t, "success after repair", seen, 1, success("imds-spot"))
			if e := next(t, out); e.Kind != interruption.KindSpotInterruption {
				t.Errorf("event %+v", e)
			}
		})
	}
}

// TestSourcesOptions covers the wiring's validation.
func TestSourcesOptions(t *testing.T) {
	client := NewClient(Options{}, nil)
	health := newRecordingHealth()
	all, err := Sources(client, Options{}, health, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Name())
	}
	want := "imds-spot imds-rebalance imds-scheduled-maintenance imds-asg-lifecycle"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("names %q, want %q", got, want)
	}
	if p := all[0].(*interruption.Poller); p.Interval != DefaultInterval {
		t.Errorf("default interval %s", p.Interval)
	}
	some, err := Sources(client, Options{Signals: []string{SignalASGLifecycle, SignalSpot}}, health, nil, nil)
	if err != nil || len(some) != 2 || some[0].Name() != "imds-spot" {
		t.Errorf("two signals: %v, %v", some, err)
	}

	for name, tc := range map[string]struct {
		o      Options
		client MetadataGetter
		health interruption.HealthReporter
		want   string
	}{
		"unknown signal":   {o: Options{Signals: []string{"spot", "earthquake"}}, want: `"earthquake"`},
		"duplicate signal": {o: Options{Signals: []string{"spot", "spot"}}, want: "twice"},
		"rebalance action": {o: Options{RebalanceAction: interruption.ActionCancel}, want: "rebalance action"},
		"interval":         {o: Options{Interval: -time.Second}, want: "interval"},
		"deadline":         {o: Options{ASGTerminationDeadline: -time.Second}, want: "deadline"},
		"no client":        {client: nil, health: health, want: "client"},
		"no health":        {client: client, want: "health"},
	} {
		t.Run(name, func(t *testing.T) {
			c, h := tc.client, tc.health
			if name != "no client" && name != "no health" {
				c, h = client, health
			}
			_, err := Sources(c, tc.o, h, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %s", err, tc.want)
			}
		})
	}
}

// getterFunc adapts a function to MetadataGetter.
type getterFunc func(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)

func (f getterFunc) GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	return f(ctx, in, optFns...)
}

// TestASGDeadlineIsStable: the deadline of one termination does not move
// from poll to poll, and a new termination after InService gets a new one.
// (AEMM cannot go back to InService, so this uses a MetadataGetter.)
func TestASGDeadlineIsStable(t *testing.T) {
	state := "Terminated"
	client := getterFunc(func(ctx context.Context, in *imds.GetMetadataInput, _ ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
		if in.Path != asgLifecyclePath {
			return nil, errors.New("unexpected path " + in.Path)
		}
		return &imds.GetMetadataOutput{Content: io.NopCloser(strings.NewReader(state))}, nil
	})
	clk := testclock.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	p := newASGLifecyclePoller(client, time.Minute, clk)
	first, err := p.poll(t.Context())
	if err != nil || len(first) != 1 {
		t.Fatalf("%v, %v", first, err)
	}
	clk.Step(10 * time.Second)
	again, _ := p.poll(t.Context())
	if len(again) != 1 || !again[0].Deadline.Equal(first[0].Deadline) || again[0].ID != first[0].ID {
		t.Errorf("deadline moved: %+v then %+v", first[0], again)
	}
	state = "InService"
	if none, err := p.poll(t.Context()); err != nil || len(none) != 0 {
		t.Errorf("InService: %v, %v", none, err)
	}
	state = "Terminated"
	clk.Step(time.Minute)
	later, _ := p.poll(t.Context())
	if len(later) != 1 || !later[0].Deadline.Equal(clk.Now().Add(time.Minute)) {
		t.Errorf("second termination: %+v", later)
	}
}

// TestNotFoundIsNoNoticeOnlyForTheMetadataPath: a 404 for the path is no
// notice; a 404 for the token request (should the SDK ever let one through)
// is an HTTP error.
func TestNotFoundIsNoNoticeOnlyForTheMetadataPath(t *testing.T) {
	notFound := func(path string) MetadataGetter {
		return getterFunc(func(ctx context.Context, in *imds.GetMetadataInput, _ ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://169.254.169.254"+path, nil)
			if err != nil {
				return nil, err
			}
			resp := &smithyhttp.Response{Response: &http.Response{StatusCode: http.StatusNotFound, Request: req}}
			return nil, fmt.Errorf("operation error: %w", &smithyhttp.ResponseError{Response: resp, Err: errors.New("request to EC2 IMDS failed")})
		})
	}
	events, err := pollSpot(notFound(spotURLPath))(t.Context())
	if err != nil || len(events) != 0 {
		t.Errorf("404 for the path: %v, %v; want no events, no error", events, err)
	}
	_, err = pollSpot(notFound(tokenPath))(t.Context())
	if r := interruption.ReasonOf(err); r != interruption.ReasonHTTP {
		t.Errorf("404 for the token: reason %q (%v), want %q", r, err, interruption.ReasonHTTP)
	}
}
