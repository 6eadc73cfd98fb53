package declog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
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

// handlerOptions makes the JSON handler accept every level; the level is
// only a label here, filtering happens in readers.
var handlerOptions = &slog.HandlerOptions{Level: slog.LevelDebug}

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

// appendAttrs appends the entry's fields in their fixed order. Optional
// fields are omitted when zero, like the json tags on Entry say.
func appendAttrs(dst []slog.Attr, e *Entry) []slog.Attr {
	dst = append(dst,
		slog.String("event", message(e)),
		slog.String("client", e.Client),
		slog.String("proto", e.Proto.String()),
		slog.String("host", e.Host),
	)
	if e.Port != 0 {
		dst = append(dst, slog.Int("port", int(e.Port)))
	}
	dst = appendString(dst, "method", e.Method)
	dst = appendString(dst, "qtype", e.QType)
	dst = append(dst,
		slog.String("verdict", e.Verdict.String()),
		slog.String("reason", e.Reason.String()),
	)
	dst = appendString(dst, "rule", e.Rule)
	dst = appendString(dst, "hint", e.Hint)
	dst = appendInt(dst, "status", int64(e.Status))
	dst = appendInt(dst, "bytes_up", e.BytesUp)
	dst = appendInt(dst, "bytes_down", e.BytesDn)
	if e.Duration != 0 {
		// Microsecond resolution, written as milliseconds: readable by people
		// and stable across a read/write round trip.
		dst = append(dst, slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000))
	}
	dst = appendInt(dst, "count", int64(e.Count))
	if len(e.Hosts) > 0 {
		dst = append(dst, slog.Any("hosts", e.Hosts))
	}
	if len(e.Clients) > 0 {
		dst = append(dst, slog.Any("clients", e.Clients))
	}
	dst = appendString(dst, "provider", e.Provider)
	dst = appendString(dst, "model", e.Model)
	dst = appendInt(dst, "input_tokens", e.InputTokens)
	dst = appendInt(dst, "output_tokens", e.OutputTokens)
	if e.CostUSD != 0 && !math.IsNaN(e.CostUSD) && !math.IsInf(e.CostUSD, 0) {
		dst = append(dst, slog.Float64("cost_usd", e.CostUSD))
	}
	if e.Estimated {
		dst = append(dst, slog.Bool("estimated", true))
	}
	return dst
}

func appendString(dst []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return dst
	}
	return append(dst, slog.String(key, v))
}

func appendInt(dst []slog.Attr, key string, v int64) []slog.Attr {
	if v == 0 {
		return dst
	}
	return append(dst, slog.Int64(key, v))
}

// record builds the slog record of e, reusing attrs as scratch space.
func record(e *Entry, attrs []slog.Attr) (slog.Record, []slog.Attr) {
	attrs = appendAttrs(attrs[:0], e)
	r := slog.NewRecord(e.Time.UTC(), level(e.Verdict), message(e), 0)
	r.AddAttrs(attrs...)
	return r, attrs
}

// Encode writes e as one JSON line to w, exactly as the Logger writes it.
// The admin SSE stream and `egressd tail --json` use it so every consumer
// sees the same bytes.
func Encode(w io.Writer, e Entry) error {
	r, _ := record(&e, make([]slog.Attr, 0, 24))
	return slog.NewJSONHandler(w, handlerOptions).Handle(context.Background(), r)
}

// Marshal returns e as one JSON line, without the trailing newline.
func Marshal(e Entry) []byte {
	var b bytes.Buffer
	_ = Encode(&b, e) // writing to a bytes.Buffer cannot fail
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
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
	case EventDecision, EventClose, EventSummary, EventUsage:
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
