package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// rawFixture is a proxy with a scripted upstream granted as raw.test: every
// connection to it runs script, which reads requests with http.ReadRequest
// and writes responses byte for byte. Every dial is logged.
type rawFixture struct {
	*fixture
	dl  *dialLog
	raw string // raw.test:port
}

func newRawFixture(t *testing.T, script func(c net.Conn, br *bufio.Reader)) *rawFixture {
	t.Helper()
	port := tcpServer(t, func(c net.Conn) { script(c, bufio.NewReader(c)) })
	dl := &dialLog{}
	f := newFixture(t, fixOpts{
		mod:        func(c *Config) { c.Dial = dl.dial },
		extraAllow: func(*fixture) string { return "  - {host: raw.test, ports: " + ports(port) + "}\n" },
	})
	f.res.set("raw.test", "127.0.0.1")
	return &rawFixture{fixture: f, dl: dl, raw: "raw.test:" + strconv.Itoa(port)}
}

func (f *rawFixture) dials() int { return len(f.dl.list()) }

// send runs one request through the upstream client as serveHTTP hands it
// over: decided, rewritten by prepareOutbound, its body NoBody when empty.
func (f *rawFixture) send(t *testing.T, ctx context.Context, method, path string, body io.Reader, header ...string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+f.raw+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.GetBody = nil // a server request cannot be rewound
	if req.Body == nil {
		req.Body = http.NoBody
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Close = strings.EqualFold(req.Header.Get("Connection"), "close") // as net/http's server parses it
	rq := &request{start: time.Now(), client: netip.MustParseAddr("127.0.0.1"), proto: vocab.ProtoHTTP,
		method: method, pol: f.pol.Load()}
	host, port, _ := net.SplitHostPort(f.raw)
	if dn := rq.setTarget(host, port); dn.denied() {
		t.Fatalf("target: %v", dn.reason)
	}
	if dn := f.srv.decide(ctx, rq); dn.denied() {
		t.Fatalf("decide: %v", dn.reason)
	}
	prepareOutbound(req, rq)
	return f.srv.up.RoundTrip(req.WithContext(withRequest(ctx, rq)), nil)
}

// readBody reads resp's body whole and closes it.
func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	_ = resp.Body.Close()
	return string(b)
}

// serveScript answers every request on a connection with the next of
// answers (raw bytes), reading each request's body first; after the last
// answer it closes.
func serveScript(answers ...string) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for _, a := range answers {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, a); err != nil {
				return
			}
		}
	}
}

// answerThenOK is a script whose first connection gives answer, then ok2
// if it is reused (or closes, when closes says the answer ends that way);
// later connections give ok2.
func answerThenOK(answer string, closes bool) func(net.Conn, *bufio.Reader) {
	var conns atomic.Int32
	return func(conn net.Conn, br *bufio.Reader) {
		switch {
		case conns.Add(1) > 1:
			serveScript(ok2)(conn, br)
		case closes:
			serveScript(answer)(conn, br)
		default:
			serveScript(answer, ok2)(conn, br)
		}
	}
}

const ok2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// TestUpstreamFraming: every response framing reads to the right end,
// and the connection goes back to the pool exactly when the response and
// request leave it fit for another request.
func TestUpstreamFraming(t *testing.T) {
	cases := []struct {
		name     string
		method   string
		header   []string // request header name, value pairs
		answer   string
		closes   bool // the upstream closes after answering
		wantBody string
		wantKept bool
	}{
		{"content-length", "GET", nil, ok2, false, "ok", true},
		{"chunked", "GET", nil, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n", false, "ok!!!", true},
		{"HEAD with a length", "HEAD", nil, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false, "", true},
		{"204", "GET", nil, "HTTP/1.1 204 No Content\r\n\r\n", false, "", true},
		{"304 with a length", "GET", nil, "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", false, "", true},
		{"empty", "GET", nil, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, "", true},
		{"close-delimited", "GET", nil, "HTTP/1.1 200 OK\r\n\r\nuntil close", true, "until close", false},
		{"HTTP/1.0", "GET", nil, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "ok", false},
		{"upstream says close", "GET", nil, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false, "ok", false},
		{"request says close", "GET", []string{"Connection", "close"}, ok2, false, "ok", false},
		{"101 without Upgrade", "GET", nil, "HTTP/1.1 101 Switching Protocols\r\n\r\n", false, "", false},
		{"bytes after the body", "GET", nil, ok2 + "HTTP/1.1 200 OK\r\n", false, "ok", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newRawFixture(t, answerThenOK(c.answer, c.closes))
			resp, err := f.send(t, context.Background(), c.method, "/", nil, c.header...)
			if err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if got := readBody(t, resp); got != c.wantBody {
				t.Errorf("body: got %q, want %q", got, c.wantBody)
			}
			if got := f.srv.Len() == 1; got != c.wantKept {
				t.Errorf("connection kept: got %v, want %v", got, c.wantKept)
			}
			resp, err = f.send(t, context.Background(), "GET", "/", nil)
			if err != nil {
				t.Fatalf("second round trip: %v", err)
			}
			if got := readBody(t, resp); got != "ok" {
				t.Errorf("second body: got %q, want %q", got, "ok")
			}
			wantDials := 2
			if c.wantKept {
				wantDials = 1
			}
			if got := f.dials(); got != wantDials {
				t.Errorf("dials: got %d, want %d", got, wantDials)
			}
		})
	}
}

// TestUpstreamEarlyCloseDropsConnection: a body closed before its end
// closes the connection (the rest of it is still on the wire).
func TestUpstreamEarlyCloseDropsConnection(t *testing.T) {
	f := newRawFixture(t, serveScript("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", ok2))
	resp, err := f.send(t, context.Background(), "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, b); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if n := f.srv.Len(); n != 0 {
		t.Errorf("open upstream connections after an early close: got %d, want 0", n)
	}
	if _, err := resp.Body.Read(b); err == nil {
		t.Error("read after close: got no error")
	}
	resp, err = f.send(t, context.Background(), "GET", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "0123456789" {
		t.Errorf("next request: got %q, want the first answer on a fresh connection", got)
	}
	if got := f.dials(); got != 2 {
		t.Errorf("dials: got %d, want 2", got)
	}
}

// TestUpstreamInterimResponses: 1xx answers before the final one are
// skipped (101 is final); a body is sent without waiting for 100
// Continue; an upstream that never stops sending 1xx is an error.
func TestUpstreamInterimResponses(t *testing.T) {
	cont := "HTTP/1.1 100 Continue\r\n\r\n"
	cases := []struct {
		name    string
		answer  string
		body    string
		wantErr error
	}{
		{"100 then 200", cont + ok2, "", nil},
		{"103 with headers then 200", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ok2, "", nil},
		{"100 to a body sent at once", cont + ok2, "payload", nil},
		{"five 1xx", strings.Repeat(cont, 5) + ok2, "", nil},
		{"six 1xx", strings.Repeat(cont, 6) + ok2, "", errToo1xx},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan string, 1)
			f := newRawFixture(t, func(conn net.Conn, br *bufio.Reader) {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				// The whole body before any answer: a client that waited for
				// 100 Continue would stall here.
				b, _ := io.ReadAll(req.Body)
				got <- string(b)
				_, _ = io.WriteString(conn, c.answer)
			})
			var body io.Reader
			hdr := []string{}
			if c.body != "" {
				body = strings.NewReader(c.body)
				hdr = []string{"Expect", "100-continue"}
			}
			resp, err := f.send(t, context.Background(), "POST", "/", body, hdr...)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("round trip: got %v, want %v", err, c.wantErr)
			}
			if err == nil {
				if resp.StatusCode != http.StatusOK || readBody(t, resp) != "ok" {
					t.Errorf("response: got %d, want 200 ok", resp.StatusCode)
				}
			}
			if b := <-got; b != c.body {
				t.Errorf("upstream got body %q, want %q", b, c.body)
			}
		})
	}
}

// TestUpstreamHeadLimit: a response head up to 1 MiB is read, a larger one
// is refused (and its connection closed) instead of buffered.
func TestUpstreamHeadLimit(t *testing.T) {
	cases := []struct {
		name    string
		size    int
		wantErr error
	}{
		{"512 KiB", 512 << 10, nil},
		{"2 MiB", 2 << 20, errHeadTooBig},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newRawFixture(t, serveScript("HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", c.size)+"\r\n"+
				"Content-Length: 2\r\n\r\nok"))
			resp, err := f.send(t, context.Background(), "GET", "/", nil)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("round trip: got %v, want %v", err, c.wantErr)
			}
			if err == nil {
				if got := len(resp.Header.Get("X-Big")); got != c.size {
					t.Errorf("header: got %d bytes, want %d", got, c.size)
				}
				_ = readBody(t, resp)
				return
			}
			if n := f.srv.Len(); n != 0 {
				t.Errorf("open upstream connections: got %d, want 0", n)
			}
		})
	}
}
