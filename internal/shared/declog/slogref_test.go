package declog

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"time"
)

// This file writes the Entry as slog attributes through
// slog.JSONHandler: the reference appendEntry must match byte for byte
// (encode_test.go), so the log format cannot drift from slog's, which
// readers expect.

var refHandlerOptions = &slog.HandlerOptions{Level: slog.LevelDebug}

func refAttrs(dst []slog.Attr, e *Entry) []slog.Attr {
	dst = append(dst,
		slog.String("event", message(e)),
		slog.String("client", e.Client),
		slog.String("proto", e.Proto.String()),
		slog.String("host", e.Host),
	)
	if e.Port != 0 {
		dst = append(dst, slog.Int("port", int(e.Port)))
	}
	dst = refString(dst, "method", e.Method)
	dst = refString(dst, "path", e.Path)
	dst = refString(dst, "qtype", e.QType)
	dst = append(dst,
		slog.String("verdict", e.Verdict.String()),
		slog.String("reason", e.Reason.String()),
	)
	dst = refString(dst, "rule", e.Rule)
	dst = refString(dst, "hint", e.Hint)
	dst = refInt(dst, "status", int64(e.Status))
	dst = refInt(dst, "bytes_up", e.BytesUp)
	dst = refInt(dst, "bytes_down", e.BytesDn)
	if e.Duration != 0 {
		dst = append(dst, slog.Float64("duration_ms", float64(e.Duration.Microseconds())/1000))
	}
	dst = refInt(dst, "count", int64(e.Count))
	if len(e.Hosts) > 0 {
		dst = append(dst, slog.Any("hosts", e.Hosts))
	}
	if len(e.Clients) > 0 {
		dst = append(dst, slog.Any("clients", e.Clients))
	}
	dst = refString(dst, "provider", e.Provider)
	dst = refString(dst, "model", e.Model)
	dst = refInt(dst, "input_tokens", e.InputTokens)
	dst = refInt(dst, "output_tokens", e.OutputTokens)
	if e.CostUSD != 0 && !math.IsNaN(e.CostUSD) && !math.IsInf(e.CostUSD, 0) {
		dst = append(dst, slog.Float64("cost_usd", e.CostUSD))
	}
	if e.Estimated {
		dst = append(dst, slog.Bool("estimated", true))
	}
	return dst
}

func refString(dst []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return dst
	}
	return append(dst, slog.String(key, v))
}

func refInt(dst []slog.Attr, key string, v int64) []slog.Attr {
	if v == 0 {
		return dst
	}
	return append(dst, slog.Int64(key, v))
}

func refRecord(e *Entry, attrs []slog.Attr) (slog.Record, []slog.Attr) {
	attrs = refAttrs(attrs[:0], e)
	r := slog.NewRecord(e.Time.UTC(), level(e.Verdict), message(e), 0)
	r.AddAttrs(attrs...)
	return r, attrs
}

// refEncode is the old Encode: e as one JSON line, newline included.
func refEncode(e Entry) []byte {
	var b bytes.Buffer
	r, _ := refRecord(&e, make([]slog.Attr, 0, 24))
	_ = slog.NewJSONHandler(&b, refHandlerOptions).Handle(context.Background(), r)
	return b.Bytes()
}

// refDropNote is the old noteDrops line.
func refDropNote(now time.Time, n, total uint64) []byte {
	var b bytes.Buffer
	r := slog.NewRecord(now.UTC(), slog.LevelWarn, "decision log dropped entries", 0)
	r.AddAttrs(slog.Uint64("dropped", n), slog.Uint64("dropped_total", total))
	_ = slog.NewJSONHandler(&b, refHandlerOptions).Handle(context.Background(), r)
	return b.Bytes()
}
