package declog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/vocab"
)

func TestFormat(t *testing.T) {
	t0 := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	hhmmss := t0.Local().Format(time.TimeOnly)
	withTime := func(e Entry) Entry { e.Time = t0; return e }
	tests := []struct {
		name string
		e    Entry
		want string
	}{
		{"deny with hint", withTime(denial("10.0.0.2", "evil.example")),
			hhmmss + ` deny       connect 10.0.0.2        evil.example:443                     not_allowlisted        add "- host: evil.example" under allow:`},
		{"allow shows rule", withTime(allowed("10.0.0.2", "pypi.org")),
			hhmmss + ` allow      http    10.0.0.2        pypi.org:80                          allowlisted            allow[0] host: "pypi.org" ports: [80]`},
		{"dns would_deny", Entry{Time: t0, Event: vocab.EventDecision, Client: "10.0.0.3", Proto: vocab.ProtoDNS,
			Host: "x.example", QType: "TXT", Verdict: vocab.Report, Reason: vocab.ReasonQTypeNotAllowed},
			hhmmss + ` would_deny dns     10.0.0.3        x.example TXT                        qtype_not_allowed`},
		{"summary", Entry{Time: t0, Event: vocab.EventSummary, Client: "10.0.0.2", Proto: vocab.ProtoConnect,
			Host: "flood.example", Port: 443, Verdict: vocab.Deny, Reason: vocab.ReasonRateLimited, Count: 999},
			hhmmss + ` deny       connect 10.0.0.2        flood.example:443                    rate_limited           x999 more in the last window`},
		{"overflow summary names its sample", Entry{Time: t0, Event: vocab.EventSummary, Client: "*", Proto: vocab.ProtoDNS,
			Host: "*", Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted, Count: 5000,
			Hosts: []string{"target.example", "\x1b[2Jx"}, Clients: []string{"10.0.0.2", "10.0.0.9"}},
			hhmmss + ` deny       dns     *               *                                    not_allowlisted        x5000 more in the last window; hosts target.example, "\x1b[2Jx"; clients 10.0.0.2, 10.0.0.9`},
		{"close", Entry{Time: t0, Event: vocab.EventClose, Client: "10.0.0.2", Proto: vocab.ProtoConnect,
			Host: "api.github.com", Port: 443, Verdict: vocab.Allow, BytesUp: 2048, BytesDn: 5 << 20,
			Duration: 1234 * time.Millisecond},
			hhmmss + ` close      connect 10.0.0.2        api.github.com:443                   up 2.0KiB down 5.0MiB  1.234s`},
		{"usage", Entry{Time: t0, Event: vocab.EventUsage, Client: "10.0.0.2", Proto: vocab.ProtoGateway,
			Provider: "openrouter", Model: "x/y", InputTokens: 10, OutputTokens: 20, CostUSD: 0.5, Estimated: true},
			hhmmss + ` usage      gateway 10.0.0.2        openrouter/x/y                       in 10 out 20           $0.50 (estimated)`},
		{"ask answered", Entry{Time: t0, Event: vocab.EventAsk, Client: "10.0.0.2", Proto: vocab.ProtoConnect,
			Host: "new.example", Port: 443, Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: "question 3f9a01c2 answered once by telegram:42"},
			hhmmss + ` ask        connect 10.0.0.2        new.example:443                      allowlisted            question 3f9a01c2 answered once by telegram:42`},
		{"ipv6", withTime(denial("fd00::2", "2001:db8::1")),
			hhmmss + ` deny       connect fd00::2         [2001:db8::1]:443                    not_allowlisted        add "- host: 2001:db8::1" under allow:`},
		{"hostile host is escaped", withTime(denial("10.0.0.2", "\x1b[2Jevil\n.example")),
			hhmmss + ` deny       connect 10.0.0.2        "\x1b[2Jevil\n.example":443          not_allowlisted        "add \"- host: \x1b[2Jevil\n.example\" under allow:"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Format(&b, tc.e, false); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tc.want+"\n" {
				t.Errorf("Format:\ngot  %q\nwant %q", got, tc.want+"\n")
			}
		})
	}
}

func TestFormatColor(t *testing.T) {
	tests := []struct {
		v    vocab.Verdict
		want string
	}{
		{vocab.Deny, "\x1b[31mdeny      \x1b[0m"},
		{vocab.Report, "\x1b[33mwould_deny\x1b[0m"},
		{vocab.Allow, "\x1b[32mallow     \x1b[0m"},
	}
	for _, tc := range tests {
		e := denial("10.0.0.2", "\x1b[31mfake")
		e.Verdict, e.Rule = tc.v, "allow[0]"
		var b bytes.Buffer
		Format(&b, e, true)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%v: got %q, want it to contain %q", tc.v, b.String(), tc.want)
		}
		// Only our own escapes: the verdict colour, the dim tail.
		if n := strings.Count(b.String(), "\x1b["); n != 4 {
			t.Errorf("%v: got %d escape sequences in %q, want 4", tc.v, n, b.String())
		}
	}
}

// writeLog writes entries through a real Logger into a rotating file.
func writeLog(t *testing.T, path string, entries []Entry) *Logger {
	t.Helper()
	l, err := New(Options{File: path, Stdout: io.Discard, MaxBytes: 1024, Keep: 200, ThrottleWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		l.Record(e)
	}
	return l
}

func mixed(n int) []Entry {
	var out []Entry
	for i := range n {
		if i%3 == 0 {
			out = append(out, denial("10.0.0.2", fmt.Sprintf("d%02d.example", i)))
		} else {
			out = append(out, allowed("10.0.0.2", fmt.Sprintf("a%02d.example", i)))
		}
	}
	return out
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	writeLog(t, path, mixed(30)).Close()
	if files, _ := Files(path); len(files) < 2 {
		t.Fatalf("want a rotated log for this test, got %v", files)
	}
	tests := []struct {
		name      string
		o         TailOptions
		wantLines int
		wantFirst string
		wantLast  string
	}{
		{"all", TailOptions{}, 30, "a01.example", "a29.example"},
		{"denied", TailOptions{DeniedOnly: true}, 10, "d00.example", "d27.example"},
		{"last 4", TailOptions{Lines: 4}, 4, "a26.example", "a29.example"},
		{"last 3 denied", TailOptions{Lines: 3, DeniedOnly: true}, 3, "d21.example", "d27.example"},
		{"json", TailOptions{JSON: true}, 30, `"host":"d00.example"`, `"host":"a29.example"`},
		{"none", TailOptions{Lines: -1}, 0, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			tc.o.File, tc.o.Out = path, &out
			if err := Tail(context.Background(), tc.o); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if out.Len() == 0 {
				lines = nil
			}
			if len(lines) != tc.wantLines {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), tc.wantLines, out.String())
			}
			if tc.wantLines > 0 && (!strings.Contains(out.String(), tc.wantFirst) || !strings.Contains(lines[len(lines)-1], tc.wantLast)) {
				t.Errorf("got\n%s\nwant it to contain %s and end with %s", out.String(), tc.wantFirst, tc.wantLast)
			}
		})
	}
}

func TestTailJSONIsTheLogLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := New(Options{File: path, Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range allFields(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) {
		l.Record(e)
	}
	l.Close()
	var out bytes.Buffer
	if err := Tail(context.Background(), TailOptions{File: path, JSON: true, Out: &out}); err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(path)
	if out.String() != string(file) {
		t.Errorf("tail --json differs from the file:\ngot  %s\nwant %s", out.String(), file)
	}
}

func TestTailFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l := writeLog(t, path, mixed(30))
	defer l.Close()
	waitFor(t, "history written", func() bool { return l.Stats().Written == 30 })
	var out testutil.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Tail(ctx, TailOptions{File: path, Follow: true, DeniedOnly: true, Lines: 2, Out: &out, Poll: 5 * time.Millisecond})
	}()
	waitFor(t, "the last 2 denials", func() bool { return countLines(out.String()) == 2 })
	if s := out.String(); !strings.Contains(s, "d24.example") || !strings.Contains(s, "d27.example") {
		t.Errorf("history: got\n%s\nwant d24 and d27", s)
	}
	for i := range 40 { // enough to rotate a few times
		l.Record(allowed("10.0.0.2", fmt.Sprintf("new%02d.example", i)))
		l.Record(denial("10.0.0.2", fmt.Sprintf("new%02d.example", i)))
	}
	waitFor(t, "the new denials", func() bool { return countLines(out.String()) >= 42 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Tail: %v", err)
	}
	if got := countLines(out.String()); got != 42 {
		t.Errorf("got %d lines, want 42:\n%s", got, out.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if f := strings.Fields(line); len(f) < 2 || f[1] != "deny" {
			t.Errorf("--denied printed %q", line)
		}
	}
}

func TestTailStream(t *testing.T) {
	var out bytes.Buffer
	stream := func(ctx context.Context, fn func(Entry) error) error {
		for _, e := range mixed(6) {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	if err := Tail(context.Background(), TailOptions{Stream: stream, DeniedOnly: true, Out: &out}); err != nil {
		t.Fatal(err)
	}
	if got := countLines(out.String()); got != 2 {
		t.Errorf("got %d lines, want 2 denials:\n%s", got, out.String())
	}
	if err := Tail(context.Background(), TailOptions{Out: &out}); err == nil {
		t.Errorf("Tail without file or stream: got nil error")
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"api.example.com", "api.example.com"},
		{"", ""},
		{"a b~", "a b~"},
		{"\x1b[2Jx", `"\x1b[2Jx"`},
		{"line\nbreak", `"line\nbreak"`},
		{"del\x7f", `"del\x7f"`},
		{"bücher.example", `"b\u00fccher.example"`},
	}
	for _, tc := range tests {
		if got := Sanitize(tc.in); got != tc.want {
			t.Errorf("Sanitize(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
