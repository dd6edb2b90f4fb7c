package health

import (
	"log/slog"

	"github.com/lastcall/lastcall/pkg/interruption"
)

// maxUnknownValue bounds how much of an unknown value, or of the name of
// its entry, is logged.
const maxUnknownValue = 64

// UnknownValue is a value in one entry of a source's answer that lastcall
// does not know: a maintenance state, an event type or status the cloud
// has added since. The parser leaves the value out and uses the rest of
// the answer.
type UnknownValue struct {
	// Entry names the entry that holds it, e.g. its event ID.
	Entry string
	// Field is the name of its field, e.g. "State" or "EventType".
	Field string
	// Value is the value.
	Value string
}

// UnknownCounter counts the unknown values of a source's answers (Sources
// does).
type UnknownCounter interface {
	Unknown(source string)
}

// Unknowns reports the unknown values of one source's answers: each is
// counted on every read that holds it, when the source's HealthReporter
// counts them (Sources does, as lastcall_source_errors_total{reason=
// "unknown_value"}), and logged once, when it first appears. It is used by
// one source, which reads one answer at a time: it is not safe for
// concurrent use.
type Unknowns struct {
	source  string
	counter UnknownCounter
	log     *slog.Logger
	seen    map[UnknownValue]bool // those of the last answer
}

// NewUnknowns returns the reporter of source's unknown values. They are
// counted if health counts them, and logged to log.
func NewUnknowns(source string, health interruption.HealthReporter, log *slog.Logger) *Unknowns {
	c, _ := health.(UnknownCounter)
	if log == nil {
		log = slog.Default()
	}
	return &Unknowns{source: source, counter: c, log: log.With("source", source)}
}

// Report reports the unknown values of one answer, which was otherwise
// read: each is counted, and logged unless the previous answer held it
// too.
func (u *Unknowns) Report(values []UnknownValue) {
	seen := make(map[UnknownValue]bool, len(values))
	for _, v := range values {
		v.Entry, v.Value = cut(v.Entry), cut(v.Value)
		if u.counter != nil {
			u.counter.Unknown(u.source)
		}
		if !u.seen[v] {
			u.log.Warn("value unknown to lastcall ignored; the rest of the answer is used",
				"entry", v.Entry, "field", v.Field, "value", v.Value)
		}
		seen[v] = true
	}
	u.seen = seen
}

func cut(s string) string {
	if len(s) > maxUnknownValue {
		return s[:maxUnknownValue] + "..."
	}
	return s
}
