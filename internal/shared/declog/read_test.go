package declog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadSkipsForeignLines(t *testing.T) {
	e := denial("10.0.0.2", "evil.example")
	e.Time = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	good := string(Marshal(e))
	input := strings.Join([]string{
		`{"time":"2025-01-01T00:00:00Z","level":"INFO","msg":"policy reloaded","hash":"abc"}`,
		good,
		`not json at all`,
		`{"event":"decision","proto":"carrier-pigeon","verdict":"deny","reason":"none"}`,
		`{"event":"decision","proto":"dns","verdict":"maybe","reason":"none"}`,
		`{"event":"decision","proto":"dns","verdict":"deny","reason":"felt_like_it"}`,
		`{"event":"gossip","proto":"dns","verdict":"deny","reason":"none"}`,
		strings.Repeat("x", maxLine+10),
		good,
		good[:len(good)/2], // torn last line, no newline
	}, "\n")
	var got []Entry
	if err := Read(strings.NewReader(input), func(e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Entry{e, e}, got); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}
}

func TestReadStopsOnCallbackError(t *testing.T) {
	line := string(Marshal(denial("10.0.0.2", "a.example"))) + "\n"
	stop := errors.New("stop")
	n := 0
	err := Read(strings.NewReader(strings.Repeat(line, 5)), func(Entry) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("got err %v after %d entries, want %v after 2", err, n, stop)
	}
}

func TestLineBufSplitsAcrossReads(t *testing.T) {
	var lines []string
	fn := func(b []byte) error { lines = append(lines, string(b)); return nil }
	var lb lineBuf
	for _, chunk := range []string{"ab", "c\nde", "f\n", "\n", "g"} {
		if err := lb.feed([]byte(chunk), fn); err != nil {
			t.Fatal(err)
		}
	}
	lb.flush(fn)
	if diff := cmp.Diff([]string{"abc", "def", "", "g"}, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

// followInto starts a follower on path (opened at its end before this
// returns, so nothing written afterwards is missed) and sends what it reads.
func followInto(t *testing.T, path string) (<-chan Entry, func()) {
	t.Helper()
	fl := &follower{path: path, interval: 5 * time.Millisecond}
	if err := fl.openAtEnd(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan Entry, 10000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		defer fl.close()
		done <- fl.run(ctx, entryFunc(func(e Entry) error { ch <- e; return nil }))
	}()
	return ch, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follower: %v", err)
		}
	}
}

func receive(t *testing.T, ch <-chan Entry, n int) []Entry {
	t.Helper()
	var got []Entry
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case e := <-ch:
			got = append(got, e)
		case <-timeout:
			t.Fatalf("got %d entries, want %d", len(got), n)
		}
	}
	return got
}

func TestFollowAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard, MaxBytes: 2048, Keep: 50})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(allowed("10.0.0.2", "before.example")) // written before following: not seen
	waitFor(t, "the first line", func() bool { return l.Stats().Written == 1 })
	ch, stop := followInto(t, path)
	defer stop()

	// A slow trickle, then a burst that rotates several times between polls.
	host := func(i int) string { return fmt.Sprintf("h%03d.example", i) }
	for i := range 10 {
		l.Record(allowed("10.0.0.2", host(i)))
		receive(t, ch, 1)
	}
	for i := 10; i < 200; i++ {
		l.Record(allowed("10.0.0.2", host(i)))
	}
	got := receive(t, ch, 190)
	for i, e := range got {
		if want := host(10 + i); e.Host != want {
			t.Fatalf("entry %d: got %s, want %s", i, e.Host, want)
		}
	}
	if files, _ := Files(path); len(files) < 5 {
		t.Errorf("got %d files, want several rotations during the test", len(files))
	}
	l.Close()
}

func TestFollowWaitsForFileAndTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.log")
	ch, stop := followInto(t, path) // does not exist yet
	defer stop()
	line := func(h string) []byte { return append(Marshal(denial("10.0.0.2", h)), '\n') }
	if err := os.WriteFile(path, bytes.Join([][]byte{line("a.example"), line("b.example")}, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, 2); got[0].Host != "a.example" || got[1].Host != "b.example" {
		t.Errorf("got %s, %s; want a.example, b.example", got[0].Host, got[1].Host)
	}
	// Truncate in place and write a shorter content: read from the start.
	if err := os.WriteFile(path, line("c.example"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, 1); got[0].Host != "c.example" {
		t.Errorf("after truncation got %s, want c.example", got[0].Host)
	}
}

func TestFollowPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fl := &follower{path: path}
	if err := fl.openAtEnd(); err != nil {
		t.Fatal(err)
	}
	defer fl.close()
	var got []string
	fn := entryFunc(func(e Entry) error { got = append(got, e.Host); return nil })
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	full := append(Marshal(denial("10.0.0.2", "half.example")), '\n')
	steps := []struct {
		write []byte
		want  int
	}{{full[:20], 0}, {nil, 0}, {full[20:], 1}}
	for i, st := range steps {
		if _, err := f.Write(st.write); err != nil {
			t.Fatal(err)
		}
		if err := fl.poll(fn); err != nil {
			t.Fatal(err)
		}
		if len(got) != st.want {
			t.Fatalf("step %d: got %d entries %v, want %d", i, len(got), got, st.want)
		}
	}
	if got[0] != "half.example" {
		t.Errorf("got %s, want half.example", got[0])
	}
}

func TestFollowReturnsOnCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.log")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Follow(ctx, path, func(Entry) error { return nil }); err != nil {
		t.Errorf("Follow after cancel: got %v, want nil", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range allFields(t0) {
		f.Add(Marshal(e))
	}
	f.Add([]byte(`{"event":"decision","proto":"dns","verdict":"deny","reason":"none","duration_ms":1e300}`))
	f.Add([]byte(`{"time":"9999-12-31T23:59:59-23:00","event":"close","proto":"http","verdict":"allow","reason":"none"}`))
	f.Add([]byte(`{"event":"usage","proto":"gateway","verdict":"allow","reason":"none","host":"\u001b[2J"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := Unmarshal(line)
		if err != nil {
			return
		}
		// Whatever parses must survive a write/read round trip unchanged,
		// and print without panicking.
		again, err := Unmarshal(Marshal(e))
		if err != nil {
			t.Fatalf("re-reading %s: %v", Marshal(e), err)
		}
		if diff := cmp.Diff(e, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		var b bytes.Buffer
		if err := Format(&b, e, true); err != nil {
			t.Fatal(err)
		}
		if bytes.Count(b.Bytes(), []byte("\n")) != 1 {
			t.Fatalf("Format wrote %q, want exactly one line", b.String())
		}
	})
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(string(Marshal(allowed("10.0.0.2", "a.example"))) + "\n{}\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		if err := Read(bytes.NewReader(data), func(e Entry) error {
			n++
			if e.Verdict.String() == "unknown" || e.Proto.String() == "unknown" || e.Reason.String() == "unknown" {
				t.Fatalf("entry with out-of-range enum: %+v", e)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if lines := bytes.Count(data, []byte("\n")) + 1; n > lines {
			t.Fatalf("got %d entries from %d lines", n, lines)
		}
	})
}

func TestFollowWhenRotationKeepsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard, MaxBytes: 600, Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch, stop := followInto(t, path)
	defer stop()
	for i := range 20 {
		host := fmt.Sprintf("h%02d.example", i)
		l.Record(allowed("10.0.0.2", host))
		if got := receive(t, ch, 1); got[0].Host != host {
			t.Fatalf("got %s, want %s", got[0].Host, host)
		}
	}
	if files, _ := Files(path); len(files) != 1 {
		t.Errorf("got files %v, want only the current one with keep < 0", files)
	}
}
