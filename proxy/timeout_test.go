package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// TestSlowlorisHeader: a client that never finishes its request head is
// cut off after timeouts.header.
func TestSlowlorisHeader(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 200ms\n"})
	for _, partial := range []string{
		"GET http://" + f.hp("granted.test") + "/ HTTP/1.1\r\nHost: gra",
		"CONNECT " + f.ep("granted.test") + " HTTP/1.1\r\n",
		"",
	} {
		c := f.dial()
		start := time.Now()
		if _, err := io.WriteString(c, partial); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c, c)
		if took := time.Since(start); took < 150*time.Millisecond {
			t.Errorf("%q: closed after %v, want about the 200ms header timeout", partial, took)
		}
	}
	if n := f.http.count(); n != 0 {
		t.Errorf("upstream reached %d times, want 0", n)
	}
}

// TestSlowClientHello: a tunnel whose ClientHello starts but does not
// finish within timeouts.header is closed, before anything reaches the
// upstream.
func TestSlowClientHello(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 200ms\n"})
	c, br := f.connect(f.ep("granted.test"))
	start := time.Now()
	if _, err := c.Write([]byte{22, 3, 1, 0, 200, 1} /* a handshake record announcing a ClientHello */); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, br)
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("closed after %v, want about the 200ms header timeout", took)
	}
	e := decisionFor(t, f.rec, "granted.test", vocab.ReasonBadRequest)
	if e.Verdict != vocab.Deny || e.Proto != vocab.ProtoConnect {
		t.Errorf("entry: got %+v, want a connect denial", e)
	}
	cl := f.rec.WaitFor(t, waitLimit, "tunnel close", func(e declog.Entry) bool { return e.Event == vocab.EventClose })
	if cl.BytesUp != 0 {
		t.Errorf("bytes sent upstream: got %d, want 0 (the partial hello is withheld)", cl.BytesUp)
	}
}

// TestMalformedClientHello: bytes that claim to be TLS but do not parse as
// a ClientHello are refused: a server might read a name from them.
func TestMalformedClientHello(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c, br := f.connect(f.ep("granted.test"))
	// A handshake record holding a ServerHello (type 2) instead.
	if _, err := c.Write([]byte{22, 3, 1, 0, 4, 2, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, br)
	decisionFor(t, f.rec, "granted.test", vocab.ReasonBadRequest)
}

// TestNonTLSTunnelPassesThrough: a tunnel that does not start with TLS is
// relayed untouched (documented: only TLS is inspected).
func TestNonTLSTunnelPassesThrough(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "SSH-2.0-test\r\n")
	echo(t, c, br, "more bytes")
}

func TestIdleTunnelClosed(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 2s\n  idle: 300ms\n"})
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "ping")
	start := time.Now()
	expectClosed(t, c, br)
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("idle tunnel closed after %v, want about 300ms", took)
	}
	cl := f.rec.WaitFor(t, waitLimit, "tunnel close", func(e declog.Entry) bool { return e.Event == vocab.EventClose })
	if cl.BytesUp != 4 || cl.BytesDn != 4 {
		t.Errorf("close entry: got up %d down %d, want 4 and 4", cl.BytesUp, cl.BytesDn)
	}
}

// TestActiveTunnelNotIdle: traffic keeps a tunnel open past timeouts.idle.
func TestActiveTunnelNotIdle(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 2s\n  idle: 300ms\n"})
	c, br := f.connect(f.ep("granted.test"))
	deadline := time.Now().Add(900 * time.Millisecond)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		echo(t, c, br, "x")
		<-tick.C
	}
	echo(t, c, br, "still open")
}

func TestRevokeClosesOnlyRevokedTunnels(t *testing.T) {
	f := newFixture(t, fixOpts{})
	revoked, rbr := f.connect(f.ep("granted.test"))
	echo(t, revoked, rbr, "a")
	kept, kbr := f.connect(f.ep("other.test"))
	echo(t, kept, kbr, "b")
	cl := f.client()
	resp, err := cl.Get("http://" + f.hp("granted.test") + "/") // leaves a pooled upstream connection
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	f.pol.Store(mustPolicy(t, "version: 1\nallow:\n  - {host: other.test, ports: "+ports(f.echo)+"}\n"+
		"networks:\n  allow: [127.0.0.0/8]\n"))
	start := time.Now()
	f.srv.Revoke()
	expectClosed(t, revoked, rbr)
	if took := time.Since(start); took > time.Second {
		t.Errorf("revoked tunnel closed after %v, want within a second", took)
	}
	echo(t, kept, kbr, "still granted")
	for _, proto := range []vocab.Proto{vocab.ProtoConnect, vocab.ProtoHTTP} {
		e := f.rec.WaitFor(t, waitLimit, "revoked "+proto.String(), func(e declog.Entry) bool {
			return e.Event == vocab.EventDecision && e.Reason == vocab.ReasonRevoked && e.Proto == proto
		})
		if e.Host != "granted.test" || e.Verdict != vocab.Deny {
			t.Errorf("revoke entry: got %+v, want deny granted.test", e)
		}
	}
	f.rec.WaitFor(t, waitLimit, "revoked tunnel close", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Reason == vocab.ReasonRevoked && e.Host == "granted.test"
	})
	resp2, body := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test"))
	if resp2.StatusCode != http.StatusForbidden {
		t.Errorf("new request after revoke: got %d %q, want 403", resp2.StatusCode, body)
	}
}

// TestRevokeAddressCheck: a reload that drops networks.allow cuts tunnels
// to addresses that are now private, even though the name is still granted.
func TestRevokeAddressCheck(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "a")
	f.pol.Store(mustPolicy(t, "version: 1\nallow:\n  - {host: granted.test, ports: "+ports(f.echo)+"}\n"))
	f.srv.Revoke()
	expectClosed(t, c, bufio.NewReader(c))
	decisionFor(t, f.rec, "granted.test", vocab.ReasonRevoked)
}

// TestHeaderSizeCap: a request head over limits.max_header_bytes is refused
// by the server before any decision is made.
func TestHeaderSizeCap(t *testing.T) {
	f := newFixture(t, fixOpts{
		limits: "  client: {rps: 100000, burst: 100000}\n  host: {rps: 100000, burst: 100000}\n  max_header_bytes: 1024\n",
	})
	big := "X-Big: " + strings.Repeat("a", 16<<10)
	resp, _ := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test"), big)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized head: got %d, want 431", resp.StatusCode)
	}
	if n := f.http.count(); n != 0 {
		t.Errorf("upstream reached %d times, want 0", n)
	}
	if resp, _ := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test")); resp.StatusCode != http.StatusOK {
		t.Errorf("normal head: got %d, want 200", resp.StatusCode)
	}
}

// TestSlowRequestBody: a request body whose bytes stop coming for
// timeouts.idle is cut (400 bad_request, logged, the connection closed),
// while a slow body that keeps making progress is forwarded whole.
func TestSlowRequestBody(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 2s\n  idle: 300ms\n"})
	g := f.hp("granted.test")
	head := "POST http://" + g + "/upload HTTP/1.1\r\nHost: " + g + "\r\nContent-Length: 100\r\n\r\n"

	t.Run("stalled", func(t *testing.T) {
		f.rec.Reset()
		c := f.dial()
		br := bufio.NewReader(c)
		start := time.Now()
		if _, err := io.WriteString(c, head+strings.Repeat("a", 10)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to a stalled body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Egressd-Reason") != "bad_request" {
			t.Errorf("stalled body: got %d reason %q, want 400 bad_request", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"))
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("cut after %v, want about the 300ms idle timeout", took)
		}
		expectClosed(t, c, br)
		decisionFor(t, f.rec, "granted.test", vocab.ReasonBadRequest)
	})

	t.Run("slow but moving", func(t *testing.T) {
		c := f.dial()
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		// 10 pieces 100 ms apart: a second in all, over three times the
		// idle timeout, but never 300 ms without a byte.
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			if _, err := io.WriteString(c, strings.Repeat("b", 10)); err != nil {
				t.Fatalf("body write: %v", err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to a slow body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("slow but moving body: got %d, want 200", resp.StatusCode)
		}
	})
}
