package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

func TestHTTPGrantedEndToEnd(t *testing.T) {
	f := newFixture(t, fixOpts{})
	resp, body := f.get("http://granted.test:"+strconv.Itoa(f.http.port)+"/path?q=secret", f.hp("granted.test"),
		"Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==",
		"Proxy-Connection: keep-alive",
		"Connection: keep-alive, X-Drop",
		"X-Drop: 1",
		"Keep-Alive: timeout=5",
		"Te: trailers",
		"X-Keep: 1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %q, want 200", resp.StatusCode, body)
	}
	want := "hello from " + f.hp("granted.test") + " /path"
	if body != want {
		t.Errorf("body: got %q, want %q", body, want)
	}
	up := f.http.last()
	if up.URL.RawQuery != "q=secret" {
		t.Errorf("upstream query: got %q, want q=secret", up.URL.RawQuery)
	}
	for _, h := range []string{"Proxy-Authorization", "Proxy-Connection", "X-Drop", "Keep-Alive", "Te"} {
		if v := up.Header.Get(h); v != "" {
			t.Errorf("upstream got hop-by-hop header %s: %q, want it stripped", h, v)
		}
	}
	if up.Header.Get("X-Keep") != "1" {
		t.Errorf("upstream X-Keep: got %q, want 1", up.Header.Get("X-Keep"))
	}

	d := decisionFor(t, f.rec, "granted.test", vocab.ReasonAllowlisted)
	if d.Verdict != vocab.Allow || d.Proto != vocab.ProtoHTTP || d.Method != "GET" ||
		d.Port != uint16(f.http.port) || d.Client != "127.0.0.1" || !strings.HasPrefix(d.Rule, "allow[0]") {
		t.Errorf("decision entry: got %+v", d)
	}
	c := f.rec.WaitFor(t, waitLimit, "close", func(e declog.Entry) bool { return e.Event == vocab.EventClose })
	if c.Status != http.StatusOK || c.BytesDn != int64(len(want)) || c.Host != "granted.test" {
		t.Errorf("close entry: got %+v, want status 200, %d bytes down", c, len(want))
	}
	for _, e := range f.rec.All() {
		line, _ := json.Marshal(e)
		if strings.Contains(string(line), "secret") || strings.Contains(string(line), "c2VjcmV0") {
			t.Errorf("log entry leaks query or credentials: %s", line)
		}
	}
}

func TestConnectGrantedEndToEnd(t *testing.T) {
	f := newFixture(t, fixOpts{})
	cl := f.client()
	resp, err := cl.Get("https://" + f.tp("granted.test") + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello from " + f.tp("granted.test") + " /x"; string(body) != want {
		t.Errorf("body: got %q, want %q", body, want)
	}
	d := decisionFor(t, f.rec, "granted.test", vocab.ReasonAllowlisted)
	if d.Proto != vocab.ProtoConnect || d.Method != http.MethodConnect || d.Port != uint16(f.tls.port) {
		t.Errorf("decision entry: got %+v", d)
	}
	cl.CloseIdleConnections()
	c := f.rec.WaitFor(t, waitLimit, "tunnel close", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Proto == vocab.ProtoConnect
	})
	if c.BytesUp == 0 || c.BytesDn == 0 || c.Status != http.StatusOK {
		t.Errorf("close entry: got %+v, want bytes both ways and status 200", c)
	}
}

func TestKeepAliveReusesUpstream(t *testing.T) {
	f := newFixture(t, fixOpts{})
	cl := f.client()
	for i := range 5 {
		resp, err := cl.Get("http://" + f.hp("granted.test") + "/" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	f.http.mu.Lock()
	defer f.http.mu.Unlock()
	for _, r := range f.http.reqs[1:] {
		if r.RemoteAddr != f.http.reqs[0].RemoteAddr {
			t.Errorf("upstream connection not reused: got %s, want %s", r.RemoteAddr, f.http.reqs[0].RemoteAddr)
		}
	}
}

func TestPostBodyCounted(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d", len(b))
	}})
	payload := strings.Repeat("x", 10000)
	resp, err := f.client().Post("http://"+f.hp("granted.test")+"/up", "text/plain", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "got 10000" {
		t.Errorf("body: got %q, want %q", body, "got 10000")
	}
	c := f.rec.WaitFor(t, waitLimit, "close", func(e declog.Entry) bool { return e.Event == vocab.EventClose })
	if c.BytesUp != 10000 {
		t.Errorf("close entry bytes up: got %d, want 10000", c.BytesUp)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocket(r.Header) {
			http.Error(w, "want websocket", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		_, _ = io.Copy(c, brw)
	}})
	c := f.dial()
	br := bufio.NewReader(c)
	resp, _ := sendRaw(t, c, br, "GET http://"+f.hp("granted.test")+"/ws HTTP/1.1\r\nHost: "+f.hp("granted.test")+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %d, want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Upgrade"); got != "websocket" {
		t.Errorf("Upgrade header: got %q, want websocket", got)
	}
	echo(t, c, br, "frame-1")
	echo(t, c, br, "frame-2")
	c.Close()
	e := f.rec.WaitFor(t, waitLimit, "websocket close", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Status == http.StatusSwitchingProtocols
	})
	if e.BytesUp < int64(len("frame-1frame-2")) || e.BytesDn < int64(len("frame-1frame-2")) {
		t.Errorf("close entry: got %+v, want the frames counted both ways", e)
	}
}

// TestStreamingIsNotBuffered checks that each event reaches the client
// before the upstream sends the next one, for SSE and for any other
// chunked stream.
func TestStreamingIsNotBuffered(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "application/x-ndjson"} {
		t.Run(ct, func(t *testing.T) {
			next := make(chan struct{})
			f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				fmt.Fprint(w, "data: one\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-next:
				case <-r.Context().Done():
					return
				}
				fmt.Fprint(w, "data: two\n\n")
			}})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.hp("granted.test")+"/events", nil)
			resp, err := f.client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
				t.Fatalf("first event: got %q, %v; want it before the second is sent", line, err)
			}
			close(next)
			rest, _ := io.ReadAll(br)
			if string(rest) != "\ndata: two\n\n" {
				t.Errorf("rest of stream: got %q", rest)
			}
		})
	}
}

func TestReportMode(t *testing.T) {
	f := newFixture(t, fixOpts{mode: "report"})
	resp, body := f.get("http://"+f.hp("evil.test")+"/", f.hp("evil.test"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("report mode, not allow-listed: got %d %q, want 200", resp.StatusCode, body)
	}
	if e := decisionFor(t, f.rec, "evil.test", vocab.ReasonNotAllowlisted); e.Verdict != vocab.Report {
		t.Errorf("verdict: got %v, want would_deny", e.Verdict)
	}
	resp, _ = f.get("http://"+f.hp("private.b.test")+"/", f.hp("private.b.test"))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egressd-Reason") != "private_address" {
		t.Errorf("report mode, private address: got %d %s, want 403 private_address (never relaxed)",
			resp.StatusCode, resp.Header.Get("X-Egressd-Reason"))
	}
}

func TestServeAfterShutdownDrainsTunnel(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "before")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown with an open tunnel: got %v, want context.DeadlineExceeded", err)
	}
	expectClosed(t, c, br)
	if _, err := net.DialTimeout("tcp", f.addr, time.Second); err == nil {
		t.Errorf("proxy still accepting after Shutdown")
	}
	if n := f.srv.Len(); n != 0 {
		t.Errorf("open upstream connections after Shutdown: got %d, want 0", n)
	}
}

func TestShutdownWithoutTunnelsIsQuick(t *testing.T) {
	f := newFixture(t, fixOpts{})
	resp, _ := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: got %v, want nil", err)
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	f := newFixture(t, fixOpts{extraAllow: func(*fixture) string {
		return "  - {host: down.test, ports: " + ports(down) + "}\n"
	}})
	f.res.set("down.test", "127.0.0.1")
	target := "down.test:" + strconv.Itoa(down)

	resp, body := f.roundTrip(connectReq(target))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not connect to "+target) {
		t.Errorf("CONNECT to a closed port: got %d %q, want 502 naming the target", resp.StatusCode, body)
	}
	c := f.rec.WaitFor(t, waitLimit, "close 502", func(e declog.Entry) bool { return e.Event == vocab.EventClose && e.Status == 502 })
	if c.Host != "down.test" || c.Proto != vocab.ProtoConnect {
		t.Errorf("close entry: got %+v", c)
	}
	resp, body = f.get("http://"+target+"/secret?token=x", target)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "secret") || strings.Contains(body, "token") {
		t.Errorf("GET to a closed port: got %d %q, want 502 without the URL", resp.StatusCode, body)
	}
}
