package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// The reasons Parse gives up on a message: a small fixed set, safe as a
// metric label.
const (
	// ReasonNotJSON: the body, or an SNS envelope's Message, is not JSON.
	ReasonNotJSON = "not-json"
	// ReasonWrongType: a field has the wrong JSON type (a number where a
	// string belongs, an array where the body's object belongs), or
	// contradicts the message's declared type.
	ReasonWrongType = "wrong-type"
	// ReasonMissingField: a field the message's kind requires is absent,
	// null or empty.
	ReasonMissingField = "missing-field"
	// ReasonBadTime: a time field is not in the format AWS uses for it.
	ReasonBadTime = "bad-time"
	// ReasonTooLarge: the body is larger than MaxBodySize.
	ReasonTooLarge = "too-large"
)

// ParseError is the error Parse returns for a message it cannot read.
// Parsing the same body again fails the same way, so retrying is useless.
type ParseError struct {
	// Reason is one of the Reason constants.
	Reason string
	// Err says what is wrong, naming the field.
	Err error
}

// Error says what is wrong with the message, prefixed with the Reason.
func (e *ParseError) Error() string {
	if e.Err == nil {
		return "unparsable message: " + e.Reason
	}
	return "unparsable message: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *ParseError) Unwrap() error { return e.Err }

// ReasonOf returns the Reason of the *ParseError in err's chain, or "" if
// there is none.
func ReasonOf(err error) string {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ""
}

// parseErrorf makes a *ParseError.
func parseErrorf(reason, format string, args ...any) *ParseError {
	return &ParseError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// missing reports a required field that is absent or empty.
func missing(field string) *ParseError {
	return parseErrorf(ReasonMissingField, "%s is missing or empty", field)
}

// inContext prefixes the description of a *ParseError with where it was
// found, keeping its Reason; other errors are wrapped the same way.
func inContext(err error, context string) error {
	var pe *ParseError
	if errors.As(err, &pe) {
		return &ParseError{Reason: pe.Reason, Err: fmt.Errorf("%s: %w", context, pe.Err)}
	}
	return fmt.Errorf("%s: %w", context, err)
}

// decode unmarshals the JSON value data, found at field ("" for the whole
// body), into v and classifies a failure as a *ParseError that names the
// offending field.
func decode(data []byte, field string, v any) error {
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return parseErrorf(ReasonWrongType, "%s is a JSON %s, want %s",
			joinField(field, te.Field), te.Value, jsonKind(te.Type))
	}
	return &ParseError{Reason: ReasonNotJSON, Err: fmt.Errorf("%s is not valid JSON: %w", fieldName(field), err)}
}

// decodeObject reads data as a JSON object, keyed exactly (encoding/json
// matches struct fields case-insensitively, and "Time" and "time" mean
// different things in the formats on the queue).
func decodeObject(data []byte, field string) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := decode(data, field, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, parseErrorf(ReasonWrongType, "%s is JSON null, want object", fieldName(field))
	}
	return obj, nil
}

// decodeDetail unmarshals an EventBridge event's detail into v.
func decodeDetail(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return missing("detail")
	}
	return decode(raw, "detail", v)
}

// joinField names the field at path sub within field.
func joinField(field, sub string) string {
	switch {
	case sub == "":
		return fieldName(field)
	case field == "":
		return sub
	}
	return field + "." + sub
}

// fieldName names field for an error message.
func fieldName(field string) string {
	if field == "" {
		return "the body"
	}
	return field
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	}
	return t.String()
}

// excerpt quotes at most 64 bytes of a value from a message, for an error
// or a Detail.
func excerpt(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
