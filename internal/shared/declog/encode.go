package declog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// ErrNotEntry is returned by Unmarshal for a line that is not a decision-log
// entry: not JSON, an ordinary slog line, or a field with an unknown value.
// Readers skip such lines instead of failing, so a torn last line after a
// crash or a note from another logger never stops `egressd tail`.
var ErrNotEntry = errors.New("not a decision log entry")

// level follows the verdict: anything that is not a plain allow is worth a
// WARN, so a log shipper filtering on level still sees every denial.
func level(v vocab.Verdict) slog.Level {
	if v == vocab.Allow {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// message is the slog msg of an entry: its event kind.
func message(e *Entry) string {
	return e.Event.String()
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

// appendEntry appends e as one JSON line, newline included: the slog
// header, then the fields table in order. It allocates nothing once dst has
// room; the writer reuses one buffer for every line.
func appendEntry(dst []byte, e *Entry) []byte {
	dst = appendHeader(dst, e.Time, level(e.Verdict), message(e))
	for i := range fields {
		f := &fields[i]
		switch f.kind {
		case kString:
			dst = appendStringField(dst, f.key, *f.str(e))
		case kOptString:
			dst = appendOptString(dst, f.key, *f.str(e))
		case kOptInt:
			dst = appendOptInt(dst, f.key, f.num(e))
		default:
			dst = f.put(dst, e)
		}
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

// Unmarshal parses one line written by Encode. It returns an error wrapping
// ErrNotEntry for anything else: not a JSON object, an unknown event, proto,
// verdict or reason, or a value of the wrong type.
func Unmarshal(line []byte) (Entry, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrNotEntry, err)
	}
	var e Entry
	if raw, ok := obj["time"]; ok {
		if err := json.Unmarshal(raw, &e.Time); err != nil {
			return Entry{}, fmt.Errorf("%w: time: %w", ErrNotEntry, err)
		}
		if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
			// slog cannot write such a time back; no clock of ours makes one.
			return Entry{}, fmt.Errorf("%w: time %v out of range", ErrNotEntry, e.Time)
		}
	}
	for i := range fields {
		f := &fields[i]
		raw, ok := obj[f.key]
		if !ok || string(raw) == "null" {
			if f.must {
				return Entry{}, fmt.Errorf("%w: no %s", ErrNotEntry, f.key)
			}
			continue
		}
		if err := f.get(&e, raw); err != nil {
			return Entry{}, fmt.Errorf("%w: %s: %w", ErrNotEntry, f.key, err)
		}
	}
	return e, nil
}
