package meter

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type sseEvent struct{ Name, Data string }

func collect(maxBytes int, chunks ...[]byte) []sseEvent {
	var got []sseEvent
	p := SSEParser{MaxEventBytes: maxBytes, OnEvent: func(ev, data []byte) {
		got = append(got, sseEvent{string(ev), string(data)})
	}}
	for _, c := range chunks {
		p.Write(c)
	}
	p.Close()
	return got
}

func TestSSEParser(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []sseEvent
	}{
		{"lf", "event: a\ndata: 1\n\ndata: 2\n\n", 0, []sseEvent{{"a", "1"}, {"", "2"}}},
		{"crlf", "event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n", 0, []sseEvent{{"a", "1"}, {"", "2"}}},
		{"cr only", "event: a\rdata: 1\r\rdata: 2\r\r", 0, []sseEvent{{"a", "1"}, {"", "2"}}},
		{"comments skipped", ": ping\n\n: OPENROUTER PROCESSING\n\ndata: x\n\n", 0, []sseEvent{{"", "x"}}},
		{"multi-line data", "data: a\ndata: b\ndata\n\n", 0, []sseEvent{{"", "a\nb\n"}}},
		{"no space after colon", "data:x\n\n", 0, []sseEvent{{"", "x"}}},
		{"only one space stripped", "data:  x\n\n", 0, []sseEvent{{"", " x"}}},
		{"event without data is not dispatched", "event: a\n\ndata: b\n\n", 0, []sseEvent{{"", "b"}}},
		{"id and retry ignored", "id: 7\nretry: 10\ndata: z\n\n", 0, []sseEvent{{"", "z"}}},
		{"unterminated last event", "data: tail", 0, []sseEvent{{"", "tail"}}},
		{"oversized line drops its event only", "data: " + strings.Repeat("x", 64) + "\n\ndata: ok\n\n", 32,
			[]sseEvent{{"", "ok"}}},
		{"oversized data across lines", "data: " + strings.Repeat("x", 20) + "\ndata: " + strings.Repeat("y", 20) + "\n\ndata: ok\n\n", 32,
			[]sseEvent{{"", "ok"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(tt.max, []byte(tt.in))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("whole input: events differ (-want +got):\n%s", diff)
			}
			chunks := make([][]byte, len(tt.in))
			for i := range chunks {
				chunks[i] = []byte(tt.in[i : i+1])
			}
			if diff := cmp.Diff(tt.want, collect(tt.max, chunks...)); diff != "" {
				t.Errorf("byte by byte: events differ (-want +got):\n%s", diff)
			}
		})
	}
}

// splitAt cuts b at the positions named by cuts (each byte of cuts is a
// distance to the next cut), so the fuzzer explores where chunk
// boundaries fall.
func splitAt(b, cuts []byte) [][]byte {
	var out [][]byte
	for _, c := range cuts {
		n := int(c)
		if n > len(b) {
			break
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// FuzzSSE checks, for the real provider streams, that any chunking yields
// the same usage as the whole stream, and for arbitrary bytes, that any
// chunking yields the same events as one Write (and nothing panics), and
// that indexEOL finds the line end bytes.IndexAny finds.
func FuzzSSE(f *testing.F) {
	var streams []fixture
	for _, fx := range fixtures {
		if fx.sse {
			streams = append(streams, fx)
		}
	}
	for i := range streams {
		f.Add(uint8(i), []byte{1, 7, 200, 3}, []byte(nil))
		f.Add(uint8(i), bytes.Repeat([]byte{1}, 64), []byte(nil))
	}
	f.Add(uint8(0), []byte{2, 1}, []byte("data: a\r\r\n\rdata:\r\n\n:x\revent: e\ndata: b\r\n\r\n"))
	f.Fuzz(func(t *testing.T, which uint8, cuts, raw []byte) {
		fx := streams[int(which)%len(streams)]
		b := readFixture(t, fx.file)
		want, wantState := extract(fx.format, true, b)
		got, gotState := extract(fx.format, true, splitAt(b, cuts)...)
		if got != want || gotState != wantState {
			t.Fatalf("%s split %v: got %+v (%d), want %+v (%d)", fx.file, cuts, got, gotState, want, wantState)
		}
		if got, want := indexEOL(raw), bytes.IndexAny(raw, "\r\n"); got != want {
			t.Fatalf("indexEOL(%q) = %d, want %d", raw, got, want)
		}
		if diff := cmp.Diff(collect(64, raw), collect(64, splitAt(raw, cuts)...)); diff != "" {
			t.Fatalf("raw %q split %v: events differ (-whole +split):\n%s", raw, cuts, diff)
		}
	})
}
