package declog

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// field is one key of the decision-log line. The table below is the line's
// only definition: appendEntry writes the keys in its order and Unmarshal
// reads them through it, so adding a field to Entry is one row here.
type field struct {
	key  string
	must bool // a line without it is not an entry
	kind kind
	str  func(*Entry) *string // kString, kOptString
	num  func(*Entry) int64   // kOptInt
	// put appends `,"key":value`, or nothing for an optional field at its
	// zero value (kCustom). It must not allocate: the writer runs it for
	// every line.
	put func(dst []byte, e *Entry) []byte
	// get reads the key's JSON value into e; an error makes the line not an
	// entry.
	get func(e *Entry, raw json.RawMessage) error
}

// kind says how appendEntry writes a field: the common kinds inline, so a
// line costs one accessor call per field rather than a chain of closures.
type kind uint8

const (
	kCustom    kind = iota // put
	kString                // always written
	kOptString             // left out when ""
	kOptInt                // left out when 0
)

// fields follow the slog header (time, level, msg) in this order.
var fields = [...]field{
	{key: "event", must: true, put: func(d []byte, e *Entry) []byte { return appendStringField(d, "event", message(e)) }, get: getEnum(func(e *Entry) *vocab.Event { return &e.Event })},
	reqString("client", func(e *Entry) *string { return &e.Client }),
	{key: "proto", must: true, put: func(d []byte, e *Entry) []byte { return appendStringField(d, "proto", e.Proto.String()) }, get: getEnum(func(e *Entry) *vocab.Proto { return &e.Proto })},
	reqString("host", func(e *Entry) *string { return &e.Host }),
	optInt("port", func(e *Entry) *uint16 { return &e.Port }),
	optString("method", func(e *Entry) *string { return &e.Method }),
	optString("path", func(e *Entry) *string { return &e.Path }),
	optString("qtype", func(e *Entry) *string { return &e.QType }),
	{key: "verdict", must: true, put: func(d []byte, e *Entry) []byte { return appendStringField(d, "verdict", e.Verdict.String()) }, get: getEnum(func(e *Entry) *vocab.Verdict { return &e.Verdict })},
	{key: "reason", must: true, put: func(d []byte, e *Entry) []byte { return appendStringField(d, "reason", e.Reason.String()) }, get: getEnum(func(e *Entry) *vocab.Reason { return &e.Reason })},
	optString("rule", func(e *Entry) *string { return &e.Rule }),
	optString("hint", func(e *Entry) *string { return &e.Hint }),
	optInt("status", func(e *Entry) *int { return &e.Status }),
	optInt("bytes_up", func(e *Entry) *int64 { return &e.BytesUp }),
	optInt("bytes_down", func(e *Entry) *int64 { return &e.BytesDn }),
	{key: "duration_ms", must: false, put: putDuration, get: getDuration},
	optInt("count", func(e *Entry) *int { return &e.Count }),
	sample("hosts", func(e *Entry) *[]string { return &e.Hosts }),
	sample("clients", func(e *Entry) *[]string { return &e.Clients }),
	optString("provider", func(e *Entry) *string { return &e.Provider }),
	optString("model", func(e *Entry) *string { return &e.Model }),
	optInt("input_tokens", func(e *Entry) *int64 { return &e.InputTokens }),
	optInt("output_tokens", func(e *Entry) *int64 { return &e.OutputTokens }),
	{key: "cost_usd", must: false, put: putCost, get: getJSON(func(e *Entry) *float64 { return &e.CostUSD })},
	{key: "estimated", must: false, put: putEstimated, get: getJSON(func(e *Entry) *bool { return &e.Estimated })},
}

// reqString is a string written even when empty, as readers expect the key.
func reqString(key string, p func(*Entry) *string) field {
	return field{key: key, kind: kString, str: p, get: getJSON(p)}
}

func optString(key string, p func(*Entry) *string) field {
	return field{key: key, kind: kOptString, str: p, get: getJSON(p)}
}

func optInt[T ~int | ~int64 | ~uint16](key string, p func(*Entry) *T) field {
	return field{key: key, kind: kOptInt, num: func(e *Entry) int64 { return int64(*p(e)) }, get: getJSON(p)}
}

// sample is a Hosts or Clients list: left out when empty, never longer on
// read than the writer makes one.
func sample(key string, p func(*Entry) *[]string) field {
	put := func(d []byte, e *Entry) []byte {
		if v := *p(e); len(v) > 0 {
			return appendStrings(d, key, v)
		}
		return d
	}
	get := func(e *Entry, raw json.RawMessage) error {
		var s []string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		if len(s) > 0 {
			n := min(len(s), SampleMax)
			*p(e) = s[:n:n]
		}
		return nil
	}
	return field{key: key, put: put, get: get}
}

func getJSON[T any](p func(*Entry) *T) func(*Entry, json.RawMessage) error {
	return func(e *Entry, raw json.RawMessage) error { return json.Unmarshal(raw, p(e)) }
}

// enum is what the log's enums share: a String form that is their token.
type enum interface {
	~uint8
	String() string
}

// getEnum inverts String by walking the enum until String reports
// "unknown": the enum's owner keeps the names, this table only reads them.
func getEnum[T enum](p func(*Entry) *T) func(*Entry, json.RawMessage) error {
	return func(e *Entry, raw json.RawMessage) error {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		for v := T(0); v.String() != "unknown"; v++ {
			if v.String() == s {
				*p(e) = v
				return nil
			}
		}
		return fmt.Errorf("unknown value %q", s)
	}
}

// putDuration writes microsecond resolution as milliseconds: readable by
// people and stable across a read/write round trip.
func putDuration(d []byte, e *Entry) []byte {
	if e.Duration == 0 {
		return d
	}
	d = append(d, `,"duration_ms":`...)
	return appendMillis(d, e.Duration.Microseconds())
}

// appendMillis appends us/1000 as appendFloat does, in integer steps
// (every logged line has a duration, and the float formatter was a
// measurable share of a DNS query's cost). Below maxExactMicros the
// shortest decimal for float64(us)/1000 is us/1000 itself, with its
// trailing zeros trimmed; beyond that, or negative, the float is written.
func appendMillis(d []byte, us int64) []byte {
	if us < 0 || us >= maxExactMicros {
		return appendFloat(d, float64(us)/1000)
	}
	d = strconv.AppendInt(d, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return d
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	d = append(d, '.')
	return append(d, digits[:n]...)
}

// maxExactMicros bounds appendMillis's integer path: below 2^43 µs
// (about 100 days) a float64's spacing is far below 0.001 ms, so no
// shorter decimal names the same float.
const maxExactMicros = 1 << 43

// maxDurationMS bounds duration_ms on read: anything beyond ~31 years is
// garbage, and converting it would overflow time.Duration.
const maxDurationMS = 1e12

func getDuration(e *Entry, raw json.RawMessage) error {
	var ms float64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return err
	}
	if ms > 0 && ms <= maxDurationMS {
		e.Duration = time.Duration(math.Round(ms*1000)) * time.Microsecond
	}
	return nil
}

// putCost leaves out a cost that is not a number: NaN and Inf have no JSON
// form, and an error string in a number's place would break readers.
func putCost(d []byte, e *Entry) []byte {
	if e.CostUSD == 0 || math.IsNaN(e.CostUSD) || math.IsInf(e.CostUSD, 0) {
		return d
	}
	d = append(d, `,"cost_usd":`...)
	return appendFloat(d, e.CostUSD)
}

func putEstimated(d []byte, e *Entry) []byte {
	if !e.Estimated {
		return d
	}
	return append(d, `,"estimated":true`...)
}
