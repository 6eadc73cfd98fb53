package declog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// hostile are strings an adversarial agent can put in a host, method,
// hint or sample: every class of byte the JSON escapers treat specially.
var hostile = []string{
	"", "plain.example", `"`, `\`, `a"b\c`, "\x00", "\x01\x1f", "\b\f\n\r\t", "\x7f",
	"<script>&amp;</script>", "\u2028\u2029", "x\u2028y\u2029z", "\xff", "\xc3", "a\xc3(b",
	"\xe2\x80", "\xe2\x80\xa8\xe2\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "héllo", "日本語",
	"\U0001F600", "\ufffd", "\x1b[2J\x1b[31mred", strings.Repeat("ab\"\\\x00é\u2028", 200),
}

// encodeCases is a large table of entries: every field, zero values,
// extremes and hostile strings in each string field.
func encodeCases() []Entry {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6000000, time.UTC)
	base := allFields(t0)
	var es []Entry
	es = append(es, Entry{}, Entry{Time: t0})
	es = append(es, base...)
	full := Entry{
		Time: t0, Event: vocab.EventSummary, Client: "10.0.0.2", Proto: vocab.ProtoGateway, Host: "*",
		Port: 65535, Method: "CONNECT", Path: "/a/b", QType: "AAAA", Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted,
		Rule: "allow[1]", Hint: "hint", Status: 599, BytesUp: math.MaxInt64, BytesDn: math.MinInt64,
		Duration: math.MaxInt64, Count: math.MaxInt, Hosts: []string{"a", "b"}, Clients: []string{"c"},
		Provider: "p", Model: "m", InputTokens: -1, OutputTokens: math.MinInt64, CostUSD: math.MaxFloat64,
		Estimated: true,
	}
	es = append(es, full)
	for _, s := range hostile {
		e := full
		e.Client, e.Host, e.Method, e.QType = s, s, s, s
		e.Rule, e.Hint, e.Provider, e.Model, e.Path = s, s+s, s, s, s
		e.Hosts, e.Clients = []string{s, "", s + "x"}, []string{s}
		es = append(es, e)
	}
	times := []time.Time{
		{}, time.Unix(0, 0), time.Unix(1, 1), time.Unix(1700000000, 123456789),
		time.Date(2025, 6, 1, 12, 0, 0, 100, time.FixedZone("x", -7*3600)),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(), // carries a monotonic reading
	}
	for _, tm := range times {
		e := full
		e.Time = tm
		es = append(es, e)
	}
	durations := []time.Duration{1, 999, time.Microsecond, -time.Microsecond, 1500 * time.Microsecond,
		time.Millisecond, 12345678 * time.Microsecond, math.MinInt64, 1<<53 + 1}
	for _, d := range durations {
		e := full
		e.Duration = d
		es = append(es, e)
	}
	costs := []float64{0, math.Copysign(0, -1), 1e-7, 1e-6, 9.99999e-7, 0.1, 0.00871, 1, 123456.789,
		1e20, 1e21, 1.5e300, -2.5, -1e-9, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
	for _, c := range costs {
		e := full
		e.CostUSD = c
		es = append(es, e)
	}
	for v := range 4 {
		for p := range 7 {
			e := base[0]
			e.Verdict, e.Proto, e.Reason = vocab.Verdict(v), vocab.Proto(p), vocab.Reason(p*3+v)
			es = append(es, e)
		}
	}
	return es
}

func TestEncodeMatchesSlog(t *testing.T) {
	var buf []byte
	for i, e := range encodeCases() {
		want := refEncode(e)
		buf = appendEntry(buf[:0], &e)
		if !bytes.Equal(buf, want) {
			t.Errorf("entry %d (%+v):\ngot  %q\nwant %q", i, e, buf, want)
			continue
		}
		var w bytes.Buffer
		if err := Encode(&w, e); err != nil || !bytes.Equal(w.Bytes(), want) {
			t.Errorf("entry %d: Encode got %q, %v; want %q", i, w.Bytes(), err, want)
		}
		if got := Marshal(e); !bytes.Equal(got, want[:len(want)-1]) {
			t.Errorf("entry %d: Marshal got %q, want %q", i, got, want[:len(want)-1])
		}
	}
}

func TestDropNoteMatchesSlog(t *testing.T) {
	now := time.Date(2025, 3, 14, 15, 9, 26, 5, time.FixedZone("y", 3600))
	for _, n := range [][2]uint64{{1, 1}, {92, 1000}, {math.MaxUint64, math.MaxUint64}} {
		got := appendDropNote(nil, now, n[0], n[1])
		if want := refDropNote(now, n[0], n[1]); !bytes.Equal(got, want) {
			t.Errorf("drop note %v:\ngot  %q\nwant %q", n, got, want)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	// What the new encoder writes, Unmarshal reads back: every case with
	// an in-range time and a known event.
	n := 0
	for _, e := range encodeCases() {
		if ms := e.Duration.Milliseconds(); ms <= 0 || ms > maxDurationMS {
			e.Duration = 1500 * time.Microsecond // Unmarshal drops what is out of range, by design
		}
		e.Duration = e.Duration.Truncate(time.Microsecond)
		line := Marshal(e)
		got, err := Unmarshal(line)
		if err != nil {
			continue // out-of-range time or an event that is not ours: refused, as before
		}
		again := Marshal(got)
		if bytes.Contains(line, []byte(`\ufffd`)) {
			// Invalid UTF-8 is written as \ufffd and read back as U+FFFD,
			// which is written as itself: one rewrite, then a fixed point.
			line = again
			got, _ = Unmarshal(line)
			again = Marshal(got)
		}
		if !bytes.Equal(again, line) {
			t.Errorf("rewrite of %q: got %q", line, again)
		}
		n++
	}
	if n < 50 {
		t.Errorf("only %d cases were readable entries, want at least 50", n)
	}
}

func TestAppendEntryAllocs(t *testing.T) {
	buf := make([]byte, 0, 4096)
	for _, e := range encodeCases()[:20] {
		if got := testing.AllocsPerRun(100, func() { buf = appendEntry(buf[:0], &e) }); got != 0 {
			t.Errorf("appendEntry(%q) allocates %v times, want 0", e.Host, got)
		}
	}
}

func FuzzEncodeMatchesSlog(f *testing.F) {
	f.Add("10.0.0.2", "pypi.org", "GET", int64(443), int64(1500250000), 0.00871, int64(1700000000), int64(5), uint32(0x0102))
	f.Add("\x00\"\\", "\xff\u2028<&>", "\b\f", int64(-1), int64(math.MinInt64), 1e-7, int64(-62135596801), int64(0), uint32(0xffffffff))
	f.Add("", "", "", int64(0), int64(0), 0.0, int64(0), int64(0), uint32(0))
	f.Add("a", "b", "c", int64(1), int64(999), 1e21, int64(253402300800), int64(999999999), uint32(7))
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, i1, i2 int64, cost float64, sec, nsec int64, bits uint32) {
		e := Entry{
			Time: time.Unix(sec, nsec), Event: vocab.Event(bits >> 14 & 7), Client: s1, Proto: vocab.Proto(bits & 7), Host: s2,
			Port: uint16(i1), Method: s3, Path: s1, QType: s1, Verdict: vocab.Verdict(bits >> 3 & 3),
			Reason: vocab.Reason(bits >> 5 & 31), Rule: s2, Hint: s1 + s2, Status: int(i2),
			BytesUp: i1, BytesDn: i2, Duration: time.Duration(i1 ^ i2), Count: int(i2),
			Provider: s3, Model: s2, InputTokens: i1, OutputTokens: i2, CostUSD: cost,
			Estimated: bits&(1<<10) != 0,
		}
		if bits&(1<<11) != 0 {
			e.Time = time.Time{}
		}
		if bits&(1<<12) != 0 {
			e.Event = vocab.EventUsage
		}
		if bits&(1<<13) != 0 {
			e.Hosts, e.Clients = []string{s1, s2, s3}, []string{s3}
		}
		want := refEncode(e)
		if got := appendEntry(nil, &e); !bytes.Equal(got, want) {
			t.Fatalf("entry %+v:\ngot  %q\nwant %q", e, got, want)
		}
	})
}

// countingWriter counts Write calls; the first one blocks until release
// is closed, so entries pile up in the queue behind it.
type countingWriter struct {
	blockingWriter
	mu     sync.Mutex
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.blockingWriter.Write(p)
}

func TestBatchIsOneWritePerDestination(t *testing.T) {
	w := &countingWriter{blockingWriter: *newBlockingWriter()}
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: w, Stderr: io.Discard, ThrottleWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(allowed("10.0.0.2", "first.example"))
	<-w.started // the writer is stuck writing the first line
	const n = 100
	for i := range n {
		l.Record(allowed("10.0.0.2", fmt.Sprintf("h%d.example", i)))
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if w.writes != 2 {
		t.Errorf("got %d writes to stdout, want 2 (the first line, then the %d queued behind it at once)", w.writes, n)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.String(); got != string(file) || countLines(got) != n+1 {
		t.Errorf("stdout has %d lines, file %d; want both %d and equal", countLines(got), countLines(string(file)), n+1)
	}
	if got := len(readAll(t, path)); got != n+1 || l.Stats().Written != n+1 {
		t.Errorf("read %d entries, Written %d; want %d", got, l.Stats().Written, n+1)
	}
}

// TestBatchRotatesLikeSingleLines writes the same lines one by one and in
// batches of every size, and wants the same files: rotation happens at the
// same line boundaries, an over-long line gets a file of its own.
func TestBatchRotatesLikeSingleLines(t *testing.T) {
	var lines [][]byte
	for i := range 60 {
		e := allowed("10.0.0.2", fmt.Sprintf("h%d.example", i))
		e.Time = time.Unix(int64(i), 0)
		if i%17 == 5 {
			e.Hint = strings.Repeat("x", 700) // longer than maxBytes
		}
		lines = append(lines, Marshal(e))
		lines[i] = append(lines[i], '\n')
	}
	const maxBytes, keep = 600, 100
	write := func(dir string, batch int) {
		r := &rotator{path: filepath.Join(dir, "d.log"), maxBytes: maxBytes, keep: keep}
		defer r.closeFile()
		for i := 0; i < len(lines); i += batch {
			p := bytes.Join(lines[i:min(i+batch, len(lines))], nil)
			if n, err := r.Write(p); err != nil || n != len(p) {
				t.Fatalf("batch %d: wrote %d of %d: %v", batch, n, len(p), err)
			}
		}
	}
	wantDir := t.TempDir()
	write(wantDir, 1)
	want := dirContents(t, wantDir)
	if len(want) < 10 {
		t.Fatalf("only %d files; the test must rotate often", len(want))
	}
	for _, batch := range []int{2, 3, 7, 16, 60} {
		dir := t.TempDir()
		write(dir, batch)
		got := dirContents(t, dir)
		if len(got) != len(want) {
			t.Errorf("batch %d: got %d files, want %d", batch, len(got), len(want))
			continue
		}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("batch %d: %s differs:\ngot  %q\nwant %q", batch, name, got[name], w)
			}
		}
	}
}

func dirContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, de := range ents {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[de.Name()] = string(b)
	}
	return m
}

func TestLinesLost(t *testing.T) {
	p := []byte("a\nbb\nccc\n")
	tests := []struct {
		n    int
		want uint64
	}{{0, 3}, {1, 3}, {2, 2}, {5, 1}, {8, 1}, {9, 1}, {-1, 3}, {100, 1}}
	for _, tc := range tests {
		if got := linesLost(p, tc.n); got != tc.want {
			t.Errorf("linesLost(%q, %d) = %d, want %d", p, tc.n, got, tc.want)
		}
	}
}

// BenchmarkWriteLine is the encoder alone: the old slog.JSONHandler path
// (attributes, record, handler; into a reused buffer) against appendEntry.
func BenchmarkWriteLine(b *testing.B) {
	t0 := time.Now()
	cases := []struct {
		name string
		e    Entry
	}{
		{"allow", allowed("10.0.0.2", "pypi.org")},
		{"denial", denial("10.0.0.2", "evil.example")},
		{"usage", allFields(t0)[4]},
		{"close", allFields(t0)[2]},
	}
	for _, bc := range cases {
		bc.e.Time = t0
		b.Run(bc.name+"/slog", func(b *testing.B) {
			var w bytes.Buffer
			h := slog.NewJSONHandler(&w, refHandlerOptions)
			attrs := make([]slog.Attr, 0, 24)
			b.ReportAllocs()
			for b.Loop() {
				w.Reset()
				var r slog.Record
				r, attrs = refRecord(&bc.e, attrs)
				_ = h.Handle(context.Background(), r)
			}
		})
		b.Run(bc.name+"/append", func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendEntry(buf[:0], &bc.e)
			}
		})
	}
}

// FuzzAppendMillis: the integer path writes what the float formatter
// writes, for every microsecond count.
func FuzzAppendMillis(f *testing.F) {
	for _, us := range []int64{0, 1, 10, 999, 1000, 1001, 1234567, -5, maxExactMicros - 1, maxExactMicros, 1 << 62} {
		f.Add(us)
	}
	f.Fuzz(func(t *testing.T, us int64) {
		got, want := appendMillis(nil, us), appendFloat(nil, float64(us)/1000)
		if string(got) != string(want) {
			t.Fatalf("appendMillis(%d) = %s, want %s", us, got, want)
		}
	})
}
