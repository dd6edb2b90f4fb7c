package messages

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseWrapped checks that Parse never panics, that whatever it returns
// keeps the invariants and holds together, that it is deterministic, and
// that wrapping a body in an SNS notification changes nothing but the
// wording of an error. The seeds are the golden payloads of testdata/; the
// generated ones stay out: mutants of a 256 KiB body only exercise the size
// check, and minimizing them stalls the fuzzer for seconds at a time.
func FuzzParseWrapped(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		f.Add(readFile(f, filepath.Base(file)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Parse(body)
		checkInvariants(t, m, err)
		checkConsistent(t, m, err)
		again, againErr := Parse(body)
		if !reflect.DeepEqual(m, again) || errText(err) != errText(againErr) {
			t.Fatalf("Parse is not deterministic:\n%+v, %v\n%+v, %v", m, err, again, againErr)
		}

		wrapped := snsWrap(t, body)
		wm, werr := Parse(wrapped)
		checkInvariants(t, wm, werr)
		checkConsistent(t, wm, werr)
		if !wrappable(body) || len(wrapped) > MaxBodySize {
			return
		}
		switch {
		case err != nil:
			if werr == nil || ReasonOf(werr) != ReasonOf(err) {
				t.Fatalf("bare: %v; wrapped in SNS: %+v, %v; want the same reason", err, wm, werr)
			}
			if !strings.Contains(werr.Error(), "SNS notification Message") {
				t.Fatalf("error %q does not say it is in the SNS notification's Message", werr)
			}
		case werr != nil:
			t.Fatalf("bare: %+v; wrapped in SNS: %v", m, werr)
		case !reflect.DeepEqual(m, wm):
			t.Fatalf("SNS changes the message:\nbare    %+v\nwrapped %+v", m, wm)
		}
	})
}

// checkConsistent checks what checkInvariants does not: the fields of a
// message agree with one another.
func checkConsistent(t *testing.T, m Message, err error) {
	t.Helper()
	if err != nil {
		return
	}
	if !m.Time.IsZero() && m.Time.Location() != time.UTC {
		t.Fatalf("time %v not in UTC", m.Time)
	}
	if !m.Deadline.IsZero() && m.Deadline.Location() != time.UTC {
		t.Fatalf("deadline %v not in UTC", m.Deadline)
	}
	ids := slices.Clone(m.InstanceIDs)
	slices.Sort(ids)
	if len(slices.Compact(ids)) != len(m.InstanceIDs) {
		t.Fatalf("an instance listed twice: %v", m.InstanceIDs)
	}
	switch m.Kind {
	case KindSpotInterruption, KindRebalance, KindStateChange, KindCapacityReservation, KindASGTerminate, KindASGLaunch:
		// Each of these names exactly one instance, ignored or not.
		if len(m.InstanceIDs) != 1 || m.InstanceIDs[0] == "" {
			t.Fatalf("%s naming instances %q", m.Kind, m.InstanceIDs)
		}
	}
	switch m.Kind {
	case KindSpotInterruption:
		if want := m.Time.Add(warningLead); !m.Deadline.Equal(want) {
			t.Fatalf("spot deadline %v, want the event's time plus %v (%v)", m.Deadline, warningLead, want)
		}
	case KindCapacityReservation:
		if m.Deadline.IsZero() {
			t.Fatalf("capacity reservation warning without a deadline: %+v", m)
		}
	case KindASGTerminate, KindASGLaunch:
		want := transitionTerminating
		if m.Kind == KindASGLaunch {
			want = transitionLaunching
		}
		if m.Lifecycle.Transition != want {
			t.Fatalf("%s with transition %q", m.Kind, m.Lifecycle.Transition)
		}
	}
	if m.Lifecycle != nil && m.Kind != KindASGTerminate && m.Kind != KindASGLaunch {
		t.Fatalf("%s with a lifecycle action %+v", m.Kind, m.Lifecycle)
	}
}

// wrappable says whether Parse must make the same of body bare and wrapped
// in an SNS notification. It need not when body is empty (an SNS Message
// cannot be), not UTF-8 (the envelope, a JSON string, cannot carry it
// unchanged), or an SNS notification itself (Parse unwraps once).
func wrappable(body []byte) bool {
	if len(body) == 0 || !utf8.Valid(body) {
		return false
	}
	obj, err := decodeObject(body, "")
	if err != nil {
		return true
	}
	_, isSNS, _ := snsMessage(obj)
	return !isSNS
}

// snsWrap puts body in an SNS notification, as a topic subscribed by an SQS
// queue without raw message delivery does.
func snsWrap(t *testing.T, body []byte) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"Type":      "Notification",
		"MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
		"TopicArn":  "arn:aws:sns:us-west-2:123456789012:lastcall",
		"Message":   string(body),
		"Timestamp": "2024-03-12T08:14:03.000Z",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
