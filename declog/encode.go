package declog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
)

// ErrNotEntry is returned by Unmarshal for a line that is not a decision-log
// entry: not JSON, an ordinary slog line, or a field with an unknown value.
// Readers skip such lines instead of failing, so a torn last line after a
// crash or a note from another logger never stops `egressd tail`.
var ErrNotEntry = errors.New("not a decision log entry")

// maxDurationMS bounds duration_ms on read: anything beyond ~31 years is
// garbage, and converting it would overflow time.Duration.
const maxDurationMS = 1e12

// level follows the verdict: anything that is not a plain allow is worth a
// WARN, so a log shipper filtering on level still sees every denial.
func level(v policy.Verdict) slog.Level {
	if v == policy.Allow {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// message is the slog msg of an entry: its event kind.
func message(e *Entry) string {
	if e.Event == "" {
		return EventDecision
	}
	return e.Event
}

// appendHeader appends {"time":...,"level":...,"msg":... as slog begins a
// line. A zero t is left out, as slog does.
func appendHeader(dst []byte, t time.Time, lvl slog.Level, msg string) []byte {
	dst = append(dst, '{')
	if !t.IsZero() {
		dst = append(dst, `"time":`...)
		dst = appendTime(dst, t.UTC())
		dst = append(dst, ',')
	}
	dst = append(dst, `"level":`...)
	dst = appendString(dst, lvl.String(), slogEscape)
	dst = append(dst, `,"msg":`...)
	return appendString(dst, msg, slogEscape)
}

// appendEntry appends e as one JSON line, newline included: the fields in
// their fixed order, optional ones left out when zero as the json tags on
// Entry say. It allocates nothing once dst has room; the writer reuses one
// buffer for every line.
func appendEntry(dst []byte, e *Entry) []byte {
	msg := message(e)
	dst = appendHeader(dst, e.Time, level(e.Verdict), msg)
	dst = appendStringField(dst, "event", msg)
	dst = appendStringField(dst, "client", e.Client)
	dst = appendStringField(dst, "proto", e.Proto.String())
	dst = appendStringField(dst, "host", e.Host)
	if e.Port != 0 {
		dst = appendIntField(dst, "port", int64(e.Port))
	}
	dst = appendOptString(dst, "method", e.Method)
	dst = appendOptString(dst, "qtype", e.QType)
	dst = appendStringField(dst, "verdict", e.Verdict.String())
	dst = appendStringField(dst, "reason", e.Reason.String())
	dst = appendOptString(dst, "rule", e.Rule)
	dst = appendOptString(dst, "hint", e.Hint)
	dst = appendOptInt(dst, "status", int64(e.Status))
	dst = appendOptInt(dst, "bytes_up", e.BytesUp)
	dst = appendOptInt(dst, "bytes_down", e.BytesDn)
	if e.Duration != 0 {
		// Microsecond resolution, written as milliseconds: readable by people
		// and stable across a read/write round trip.
		dst = append(dst, `,"duration_ms":`...)
		dst = appendFloat(dst, float64(e.Duration.Microseconds())/1000)
	}
	dst = appendOptInt(dst, "count", int64(e.Count))
	if len(e.Hosts) > 0 {
		dst = appendStrings(dst, "hosts", e.Hosts)
	}
	if len(e.Clients) > 0 {
		dst = appendStrings(dst, "clients", e.Clients)
	}
	dst = appendOptString(dst, "provider", e.Provider)
	dst = appendOptString(dst, "model", e.Model)
	dst = appendOptInt(dst, "input_tokens", e.InputTokens)
	dst = appendOptInt(dst, "output_tokens", e.OutputTokens)
	if e.CostUSD != 0 && !math.IsNaN(e.CostUSD) && !math.IsInf(e.CostUSD, 0) {
		// NaN and Inf have no JSON form; a cost that is not a number is
		// left out rather than written as an error string.
		dst = append(dst, `,"cost_usd":`...)
		dst = appendFloat(dst, e.CostUSD)
	}
	if e.Estimated {
		dst = append(dst, `,"estimated":true`...)
	}
	return append(dst, '}', '\n')
}

func appendOptString(dst []byte, key, v string) []byte {
	if v == "" {
		return dst
	}
	return appendStringField(dst, key, v)
}

func appendOptInt(dst []byte, key string, v int64) []byte {
	if v == 0 {
		return dst
	}
	return appendIntField(dst, key, v)
}

// appendDropNote appends the ordinary slog-shaped line (not an Entry, so
// readers skip it) that says how many entries the queue lost.
func appendDropNote(dst []byte, now time.Time, n, total uint64) []byte {
	dst = appendHeader(dst, now, slog.LevelWarn, "decision log dropped entries")
	dst = appendUintField(dst, "dropped", n)
	dst = appendUintField(dst, "dropped_total", total)
	return append(dst, '}', '\n')
}

// encodeBufs recycles Encode's buffers: the admin stream encodes every
// entry for every subscriber.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Encode writes e as one JSON line to w, exactly as the Logger writes it,
// in one Write. The admin SSE stream and `egressd tail --json` use it so
// every consumer sees the same bytes.
func Encode(w io.Writer, e Entry) error {
	bp := encodeBufs.Get().(*[]byte)
	*bp = appendEntry((*bp)[:0], &e)
	_, err := w.Write(*bp)
	if cap(*bp) <= 64<<10 {
		encodeBufs.Put(bp)
	}
	return err
}

// Marshal returns e as one JSON line, without the trailing newline.
func Marshal(e Entry) []byte {
	b := appendEntry(make([]byte, 0, 512), &e)
	return b[:len(b)-1]
}

// wire is the JSON shape of a line; enums travel as their String forms.
type wire struct {
	Time         time.Time `json:"time"`
	Msg          string    `json:"msg"`
	Event        string    `json:"event"`
	Client       string    `json:"client"`
	Proto        string    `json:"proto"`
	Host         string    `json:"host"`
	Port         uint16    `json:"port"`
	Method       string    `json:"method"`
	QType        string    `json:"qtype"`
	Verdict      string    `json:"verdict"`
	Reason       string    `json:"reason"`
	Rule         string    `json:"rule"`
	Hint         string    `json:"hint"`
	Status       int       `json:"status"`
	BytesUp      int64     `json:"bytes_up"`
	BytesDn      int64     `json:"bytes_down"`
	DurationMS   float64   `json:"duration_ms"`
	Count        int       `json:"count"`
	Hosts        []string  `json:"hosts"`
	Clients      []string  `json:"clients"`
	Provider     string    `json:"provider"`
	Model        string    `json:"model"`
	InputTokens  int64     `json:"input_tokens"`
	OutputTokens int64     `json:"output_tokens"`
	CostUSD      float64   `json:"cost_usd"`
	Estimated    bool      `json:"estimated"`
}

// Unmarshal parses one line written by Encode. It returns an error wrapping
// ErrNotEntry for anything else.
func Unmarshal(line []byte) (Entry, error) {
	var w wire
	if err := json.Unmarshal(line, &w); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrNotEntry, err)
	}
	if !knownEvent(w.Event) {
		return Entry{}, fmt.Errorf("%w: event %q", ErrNotEntry, w.Event)
	}
	if y := w.Time.UTC().Year(); y < 0 || y > 9999 {
		// slog cannot write such a time back; no clock of ours makes one.
		return Entry{}, fmt.Errorf("%w: time %v out of range", ErrNotEntry, w.Time)
	}
	proto, ok := parseProto(w.Proto)
	if !ok {
		return Entry{}, fmt.Errorf("%w: proto %q", ErrNotEntry, w.Proto)
	}
	verdict, ok := parseVerdict(w.Verdict)
	if !ok {
		return Entry{}, fmt.Errorf("%w: verdict %q", ErrNotEntry, w.Verdict)
	}
	reason, ok := policy.ParseReason(w.Reason)
	if !ok {
		return Entry{}, fmt.Errorf("%w: reason %q", ErrNotEntry, w.Reason)
	}
	e := Entry{
		Time: w.Time, Event: w.Event, Client: w.Client, Proto: proto, Host: w.Host,
		Port: w.Port, Method: w.Method, QType: w.QType, Verdict: verdict, Reason: reason,
		Rule: w.Rule, Hint: w.Hint, Status: w.Status, BytesUp: w.BytesUp, BytesDn: w.BytesDn,
		Count: w.Count, Provider: w.Provider, Model: w.Model, InputTokens: w.InputTokens,
		OutputTokens: w.OutputTokens, CostUSD: w.CostUSD, Estimated: w.Estimated,
	}
	e.Hosts, e.Clients = sampleOf(w.Hosts), sampleOf(w.Clients)
	if w.DurationMS > 0 && w.DurationMS <= maxDurationMS {
		e.Duration = time.Duration(math.Round(w.DurationMS*1000)) * time.Microsecond
	}
	return e, nil
}

// sampleOf is a Hosts or Clients sample as read: nil when empty (as
// written), and never longer than the writer makes one.
func sampleOf(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s[:min(len(s), SampleMax):min(len(s), SampleMax)]
}

func knownEvent(s string) bool {
	switch s {
	case EventDecision, EventClose, EventSummary, EventUsage, EventAsk:
		return true
	}
	return false
}

// parseProto and parseVerdict invert the String methods by walking the enum
// until String reports "unknown"; policy owns the names, not this package.
func parseProto(s string) (policy.Proto, bool) {
	for p := policy.Proto(0); p.String() != "unknown"; p++ {
		if p.String() == s {
			return p, true
		}
	}
	return 0, false
}

func parseVerdict(s string) (policy.Verdict, bool) {
	for v := policy.Verdict(0); v.String() != "unknown"; v++ {
		if v.String() == s {
			return v, true
		}
	}
	return 0, false
}
