package declog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"
)

// allFields sets every Entry field, so a round trip covers each key.
func allFields(t0 time.Time) []Entry {
	return []Entry{
		allowed("10.0.0.2", "pypi.org"),
		denial("10.0.0.2", "evil.example"),
		{Time: t0, Event: vocab.EventClose, Client: "10.0.0.2", Proto: vocab.ProtoConnect, Host: "api.github.com",
			Port: 443, Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Status: 200,
			BytesUp: 1234, BytesDn: 98765, Duration: 1500*time.Millisecond + 250*time.Microsecond},
		{Time: t0, Event: vocab.EventDecision, Client: "10.0.0.3", Proto: vocab.ProtoDNS, Host: "x.example",
			QType: "TXT", Verdict: vocab.Report, Reason: vocab.ReasonQTypeNotAllowed},
		{Time: t0, Event: vocab.EventUsage, Client: "10.0.0.2", Proto: vocab.ProtoGateway, Host: "openrouter.ai",
			Port: 443, Method: "POST", Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Status: 200,
			Provider: "openrouter", Model: "anthropic/claude-sonnet-4", InputTokens: 1200, OutputTokens: 340,
			CostUSD: 0.00871, Estimated: true},
	}
}

func TestRoundTripFile(t *testing.T) {
	clk := testutil.NewClock(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "decisions.log")
	var stdout testutil.Buffer
	l, err := New(Options{File: path, Stdout: &stdout, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	want := allFields(clk.Now())
	for i := range want {
		if want[i].Time.IsZero() {
			want[i].Time = clk.Now() // what Record stamps
		}
		l.Record(want[i])
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := readAll(t, path)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != stdout.String() {
		t.Errorf("file and stdout differ:\nfile:   %q\nstdout: %q", file, stdout.String())
	}
}

func TestLineShape(t *testing.T) {
	e := denial("10.0.0.2", "evil.example")
	e.Time = time.Date(2025, 1, 2, 3, 4, 5, 6000000, time.UTC)
	got := string(Marshal(e))
	want := `{"time":"2025-01-02T03:04:05.006Z","level":"WARN","msg":"decision","event":"decision",` +
		`"client":"10.0.0.2","proto":"connect","host":"evil.example","port":443,"verdict":"deny",` +
		`"reason":"not_allowlisted","hint":"add \"- host: evil.example\" under allow:"}`
	if got != want {
		t.Errorf("Marshal:\ngot  %s\nwant %s", got, want)
	}
	levels := []struct {
		v    vocab.Verdict
		want string
	}{{vocab.Allow, `"level":"INFO"`}, {vocab.Report, `"level":"WARN"`}, {vocab.Deny, `"level":"WARN"`}}
	for _, tc := range levels {
		e.Verdict = tc.v
		if got := string(Marshal(e)); !strings.Contains(got, tc.want) {
			t.Errorf("verdict %v: got %s, want it to contain %s", tc.v, got, tc.want)
		}
	}
}

func TestRotation(t *testing.T) {
	tests := []struct {
		name      string
		keep      int
		wantFiles int
		wantAll   bool
	}{
		{"keep enough", 100, 0, true},
		{"keep 2", 2, 3, false},
	}
	const n = 300
	const maxBytes = 4096
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.log")
			l, err := New(Options{File: path, Stdout: io.Discard, MaxBytes: maxBytes, Keep: tc.keep})
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				l.Record(allowed("10.0.0.2", fmt.Sprintf("h%03d.example", i)))
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files, err := Files(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantFiles > 0 && len(files) != tc.wantFiles {
				t.Errorf("got %d files %v, want %d", len(files), files, tc.wantFiles)
			}
			if len(files) < 3 {
				t.Errorf("got %d files, want rotation to have happened", len(files))
			}
			for _, f := range files {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() > maxBytes {
					t.Errorf("%s: size %d, want <= %d", f, st.Size(), maxBytes)
				}
			}
			got := readAll(t, path)
			if tc.wantAll && len(got) != n {
				t.Errorf("read %d entries, want all %d", len(got), n)
			}
			// Whatever is kept is the newest entries, in order.
			first := n - len(got)
			for i, e := range got {
				if want := fmt.Sprintf("h%03d.example", first+i); e.Host != want {
					t.Fatalf("entry %d: got host %s, want %s (order broken)", i, e.Host, want)
				}
			}
		})
	}
}

func TestFilesIgnoresForeignNames(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.log")
	for _, name := range []string{"d.log", "d.log.1", "d.log.10", "d.log.2", "d.log.gz", "d.log.01", "d.log.-1", "other.log.1"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{path + ".10", path + ".2", path + ".1", path}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Files (-want +got):\n%s", diff)
	}
	if _, err := Files(filepath.Join(dir, "missing.log")); err == nil {
		t.Errorf("Files(missing): got nil error, want not-exist")
	}
}

func TestThrottleFolds(t *testing.T) {
	clk := testutil.NewClock(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		l.Record(denial("10.0.0.2", "flood.example"))
		if i%100 == 0 {
			l.Record(allowed("10.0.0.2", "pypi.org")) // never folded
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var denials, summaries, allows int
	for _, e := range readAll(t, path) {
		switch {
		case e.Event == vocab.EventSummary:
			summaries++
			if e.Count != 999 || e.Host != "flood.example" || e.Reason != vocab.ReasonNotAllowlisted {
				t.Errorf("summary: got count %d host %s reason %v, want 999 flood.example not_allowlisted",
					e.Count, e.Host, e.Reason)
			}
		case e.Verdict == vocab.Deny:
			denials++
		default:
			allows++
		}
	}
	if denials != 1 || summaries != 1 || allows != 10 {
		t.Errorf("got %d denials, %d summaries, %d allows; want 1, 1, 10", denials, summaries, allows)
	}
	if s := l.Stats(); s.Suppressed != 999 {
		t.Errorf("Stats.Suppressed = %d, want 999", s.Suppressed)
	}
}

func TestThrottleWindowEndsOnNextWrite(t *testing.T) {
	clk := testutil.NewClock(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC))
	var stdout testutil.Buffer
	// A window far longer than the test keeps the ticker out of it: only
	// the next write can end it.
	l, err := New(Options{Stdout: &stdout, Clock: clk.Now, ThrottleWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Record(denial("10.0.0.2", "a.example"))
	}
	l.Record(denial("10.0.0.9", "a.example")) // another client: its own window
	clk.Advance(time.Hour)
	l.Record(denial("10.0.0.2", "a.example"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := Read(strings.NewReader(stdout.String()), func(e Entry) error {
		got = append(got, fmt.Sprintf("%s %s %d", e.Event, e.Client, e.Count))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"decision 10.0.0.2 0", "decision 10.0.0.9 0", "summary 10.0.0.2 4", "decision 10.0.0.2 0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

func TestThrottleWindowEndsOnTimer(t *testing.T) {
	clk := testutil.NewClock(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC))
	var stdout testutil.Buffer
	l, err := New(Options{Stdout: &stdout, Clock: clk.Now, ThrottleWindow: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 3 {
		l.Record(denial("10.0.0.2", "a.example"))
	}
	clk.Advance(time.Second)
	waitFor(t, "the summary line", func() bool { return strings.Contains(stdout.String(), `"count":2`) })
}

func TestThrottleOff(t *testing.T) {
	var stdout testutil.Buffer
	l, err := New(Options{Stdout: &stdout, ThrottleWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		l.Record(denial("10.0.0.2", "a.example"))
	}
	l.Close()
	if got := countLines(stdout.String()); got != 20 {
		t.Errorf("got %d lines, want 20 with throttling off", got)
	}
}

func TestWriteErrorsCountedNotFatal(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to simulate a full disk")
	}
	var stdout, stderr testutil.Buffer
	l, err := New(Options{File: "/dev/full", Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Record(allowed("10.0.0.2", fmt.Sprintf("h%d.example", i)))
	}
	l.Close()
	if s := l.Stats(); s.WriteErrors != 10 || s.Written != 10 {
		t.Errorf("got %d write errors, %d written; want 10, 10", s.WriteErrors, s.Written)
	}
	if got := countLines(stdout.String()); got != 10 {
		t.Errorf("stdout: got %d lines, want 10 (the file failing must not stop stdout)", got)
	}
	if got := countLines(stderr.String()); got != 1 {
		t.Errorf("stderr: got %d lines, want 1 (rate-limited):\n%s", got, stderr.String())
	}
}

// blockingWriter blocks every Write until release is closed: a stuck disk.
type blockingWriter struct {
	started chan struct{}
	once    sync.Once
	release chan struct{}
	testutil.Buffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return b.Buffer.Write(p)
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
}

func TestSlowWriterDropsInsteadOfBlocking(t *testing.T) {
	w := newBlockingWriter()
	l, err := New(Options{Stdout: w, Stderr: io.Discard, Buffer: 8})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(allowed("10.0.0.2", "first.example"))
	<-w.started // the writer is now stuck on the first line
	const n = 100
	for i := range n {
		l.Record(allowed("10.0.0.2", fmt.Sprintf("h%d.example", i)))
	}
	s := l.Stats()
	if s.Dropped != n-8 {
		t.Errorf("Dropped = %d, want %d (queue of 8 full)", s.Dropped, n-8)
	}
	close(w.release)
	l.Close()
	if !strings.Contains(w.String(), fmt.Sprintf(`"msg":"decision log dropped entries","dropped":%d`, n-8)) {
		t.Errorf("no drop note in output:\n%s", w.String())
	}
}

func TestRecordAllocs(t *testing.T) {
	w := newBlockingWriter()
	l, err := New(Options{Stdout: w, Buffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { close(w.release); l.Close() }()
	l.Record(allowed("10.0.0.2", "first.example"))
	<-w.started // the writer is parked, so only Record's own allocations count
	e := allowed("10.0.0.2", "pypi.org")
	if got := testing.AllocsPerRun(1000, func() { l.Record(e) }); got != 0 {
		t.Errorf("Record allocates %v times per call, want 0", got)
	}
}

func TestSubscribe(t *testing.T) {
	l, err := New(Options{Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel := l.Subscribe(4)
	slow, cancelSlow := l.Subscribe(1)
	defer cancelSlow()
	want := allowed("10.0.0.2", "pypi.org")
	want.Time = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 3 {
		l.Record(want)
	}
	for i := range 3 {
		if got := <-ch; !cmp.Equal(got, want) {
			t.Errorf("entry %d: got %+v, want %+v", i, got, want)
		}
	}
	if got := l.Stats().SubDropped; got != 2 {
		t.Errorf("SubDropped = %d, want 2 (slow subscriber with buffer 1)", got)
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Errorf("channel still open after cancel")
	}
	cancel() // twice is fine
	l.Close()
	<-slow // the one buffered entry
	if _, ok := <-slow; ok {
		t.Errorf("subscriber channel still open after Close")
	}
	if late, _ := l.Subscribe(1); late != nil {
		if _, ok := <-late; ok {
			t.Errorf("Subscribe after Close: got an open channel")
		}
	}
}

func TestConcurrentRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard, Buffer: 8192})
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				l.Record(allowed(fmt.Sprintf("10.0.0.%d", w), fmt.Sprintf("h%d.example", i)))
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	got := len(readAll(t, path))
	if uint64(got) != s.Written || s.Written+s.Dropped != workers*per {
		t.Errorf("read %d, written %d, dropped %d; want read == written and written+dropped == %d",
			got, s.Written, s.Dropped, workers*per)
	}
	l.Record(allowed("10.0.0.2", "late.example")) // after Close: dropped, no panic
}

func TestTee(t *testing.T) {
	var a, b []Entry
	r := Tee(recorderFunc(func(e Entry) { a = append(a, e) }), nil, recorderFunc(func(e Entry) { b = append(b, e) }))
	r.Record(allowed("10.0.0.2", "x.example"))
	if len(a) != 1 || len(b) != 1 {
		t.Errorf("got %d and %d entries, want 1 each", len(a), len(b))
	}
}

type recorderFunc func(Entry)

func (f recorderFunc) Record(e Entry) { f(e) }

func BenchmarkRecord(b *testing.B) {
	cases := []struct {
		name string
		e    Entry
	}{
		{"allow", allowed("10.0.0.2", "pypi.org")},
		{"repeated-denial", denial("10.0.0.2", "flood.example")},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "decisions.log")
			l, err := New(Options{File: path, Stdout: io.Discard, Stderr: io.Discard})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Record(bc.e)
				}
			})
			b.StopTimer()
			l.Close()
			s := l.Stats()
			b.ReportMetric(float64(s.Dropped)/float64(b.N), "dropped/op")
		})
	}
}

func BenchmarkWriter(b *testing.B) {
	// The writer goroutine's work per entry when it writes lines one by one
	// (encode + append to a file): the floor under a lightly loaded daemon.
	rot := &rotator{path: filepath.Join(b.TempDir(), "decisions.log"), maxBytes: 1 << 30, keep: 1}
	defer rot.closeFile()
	e := allowed("10.0.0.2", "pypi.org")
	e.Time = time.Now()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEntry(buf[:0], &e)
		if _, err := rot.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoneEntryReachesTheFile: an entry that no other follows is written
// within the linger, without waiting for a full batch or for Close.
func TestLoneEntryReachesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Record(denial("10.0.0.2", "lone.example"))
	waitFor(t, "the lone entry in the file", func() bool {
		b, _ := os.ReadFile(path)
		return bytes.Contains(b, []byte("lone.example"))
	})
	if got := l.Stats().Written; got != 1 {
		t.Errorf("written: got %d, want 1", got)
	}
}
