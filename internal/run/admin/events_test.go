package admin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/shared/declog"
)

// streamRig is an admin server whose /events is fed by a real declog.Logger,
// with a signal each time a stream subscribes.
type streamRig struct {
	log        *declog.Logger
	srv        *Server
	ts         *httptest.Server
	subscribed chan struct{}
}

func newStreamRig(t *testing.T, token string) *streamRig {
	t.Helper()
	l, err := declog.New(declog.Options{Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	r := &streamRig{log: l, subscribed: make(chan struct{}, 8)}
	r.srv = New(Config{Token: token, Heartbeat: time.Hour, Subscribe: func(buf int) (<-chan declog.Entry, func()) {
		ch, cancel := l.Subscribe(buf)
		r.subscribed <- struct{}{}
		return ch, cancel
	}})
	r.ts = httptest.NewServer(r.srv)
	t.Cleanup(func() {
		r.srv.Close()
		r.ts.Close()
		l.Close()
	})
	return r
}

func (r *streamRig) waitSubscribed(t *testing.T) {
	t.Helper()
	select {
	case <-r.subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("no stream subscribed")
	}
}

func TestEventsRawSSE(t *testing.T) {
	rig := newStreamRig(t, "")
	resp, err := http.Get(rig.ts.URL + "/events?denied=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	rig.waitSubscribed(t)
	allow := entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted)
	deny := entry(vocab.ProtoConnect, "evil.example", 443, vocab.Deny, vocab.ReasonNotAllowlisted)
	rig.log.Record(allow) // filtered out by ?denied=1
	rig.log.Record(deny)
	br := bufio.NewReader(resp.Body)
	var lines []string
	for len(lines) < 5 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimSuffix(line, "\n"))
	}
	want := []string{": egressd decisions", "", "event: decision", "data: " + string(declog.Marshal(deny)), ""}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
}

func TestStreamRoundTrip(t *testing.T) {
	const token = "tok"
	rig := newStreamRig(t, token)
	got := make(chan declog.Entry, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Stream(ctx, rig.ts.URL, token, func(e declog.Entry) error { got <- e; return nil })
	}()
	rig.waitSubscribed(t)
	want := []declog.Entry{
		entry(vocab.ProtoDNS, "models.dev", 0, vocab.Report, vocab.ReasonNotAllowlisted),
		{Time: t0, Event: vocab.EventUsage, Client: "10.0.0.2", Proto: vocab.ProtoGateway, Host: "openrouter.ai",
			Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Provider: "openrouter", Model: "m",
			InputTokens: 5, OutputTokens: 7, CostUSD: 0.25},
	}
	for _, e := range want {
		rig.log.Record(e)
	}
	for i, w := range want {
		select {
		case e := <-got:
			if diff := cmp.Diff(w, e); diff != "" {
				t.Errorf("entry %d (-want +got):\n%s", i, diff)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("entry %d never arrived", i)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Stream after cancel: got %v, want nil", err)
	}
}

func TestStreamEndsWhenServerCloses(t *testing.T) {
	rig := newStreamRig(t, "")
	done := make(chan error, 1)
	go func() {
		done <- Stream(context.Background(), rig.ts.URL, "", func(declog.Entry) error { return nil })
	}()
	rig.waitSubscribed(t)
	rig.srv.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamEnded) {
			t.Errorf("Stream: got %v, want ErrStreamEnded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stream did not end after Server.Close")
	}
}

func TestStreamCallbackError(t *testing.T) {
	rig := newStreamRig(t, "")
	stop := errors.New("enough")
	done := make(chan error, 1)
	go func() {
		done <- Stream(context.Background(), rig.ts.URL, "", func(declog.Entry) error { return stop })
	}()
	rig.waitSubscribed(t)
	rig.log.Record(entry(vocab.ProtoHTTP, "a.example", 80, vocab.Deny, vocab.ReasonNotAllowlisted))
	if err := <-done; !errors.Is(err, stop) {
		t.Errorf("Stream: got %v, want the callback's error", err)
	}
}

// TestTailAdmin is `egressd tail -f --admin URL --denied`: declog.Tail fed by
// admin.Stream (or StreamDenied) against a live server.
func TestTailAdmin(t *testing.T) {
	// Filtered by the client (Tail's DeniedOnly) and by the server too.
	for _, path := range []string{"/events", "/events?denied=1"} {
		t.Run(path, func(t *testing.T) { testTailAdmin(t, path) })
	}
}

func testTailAdmin(t *testing.T, path string) {
	rig := newStreamRig(t, "")
	var out syncWriter
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- declog.Tail(ctx, declog.TailOptions{
			DeniedOnly: true, Follow: true, Out: &out,
			Stream: func(ctx context.Context, fn func(declog.Entry) error) error {
				return stream(ctx, rig.ts.URL, path, "", fn)
			},
		})
	}()
	rig.waitSubscribed(t)
	rig.log.Record(entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted))
	rig.log.Record(entry(vocab.ProtoConnect, "evil.example", 443, vocab.Deny, vocab.ReasonNotAllowlisted))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "evil.example:443") {
		if time.Now().After(deadline) {
			t.Fatalf("tail output never showed the denial: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Tail: %v", err)
	}
	if s := out.String(); strings.Contains(s, "pypi.org") || strings.Count(s, "\n") != 1 {
		t.Errorf("tail --denied printed %q, want only the denial", s)
	}
}

func TestReadEventsParsing(t *testing.T) {
	e := entry(vocab.ProtoConnect, "a.example", 443, vocab.Deny, vocab.ReasonNotAllowlisted)
	line := string(declog.Marshal(e))
	input := ": comment\r\n\r\nevent: decision\r\nid: 1\r\ndata: " + line + "\r\n\r\n" +
		"data: not json\n\n" + "data:" + line + "\n\n" + "retry: 10\n\n"
	var got []declog.Entry
	err := readEvents(bufio.NewReader(strings.NewReader(input)), func(e declog.Entry) error { got = append(got, e); return nil })
	if !errors.Is(err, io.EOF) {
		t.Errorf("readEvents: got %v, want EOF at the end", err)
	}
	if diff := cmp.Diff([]declog.Entry{e, e}, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	long := "data: " + strings.Repeat("x", maxEventLine+1) + "\n\n"
	if err := readEvents(bufio.NewReader(strings.NewReader(long)), func(declog.Entry) error { return nil }); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("oversized line: got %v, want a size error", err)
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add([]byte("data: {}\n\n: x\n\ndata: a\ndata: b\n\n"))
	f.Add([]byte("data: " + string(declog.Marshal(entry(vocab.ProtoDNS, "x", 0, vocab.Deny, vocab.ReasonNone))) + "\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = readEvents(bufio.NewReader(strings.NewReader(string(data))), func(declog.Entry) error { return nil })
	})
}
