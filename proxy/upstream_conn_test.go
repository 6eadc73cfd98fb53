package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUpstreamRetriesDeadPooledConnection: the upstream reads the second
// request on a connection and closes it without an answer (it gave up on
// the connection as the request arrived). A request that can be replayed
// is sent again, once, on a fresh connection; one that cannot gets the
// error. A fresh connection failing the same way is never retried.
func TestUpstreamRetriesDeadPooledConnection(t *testing.T) {
	cases := []struct {
		name      string
		method    string
		body      string
		header    []string
		wantRetry bool
	}{
		{"GET", "GET", "", nil, true},
		{"HEAD", "HEAD", "", nil, true},
		{"DELETE with an idempotency key", "DELETE", "", []string{"Idempotency-Key", "k1"}, true},
		{"POST without a body", "POST", "", nil, false},
		{"POST with a body", "POST", "payload", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var seen atomic.Int32 // requests the upstream read
			f := newRawFixture(t, func(conn net.Conn, br *bufio.Reader) {
				serveScript(ok2)(conn, br)
				if _, err := http.ReadRequest(br); err == nil {
					seen.Add(1)
				}
			})
			resp, err := f.send(t, context.Background(), "GET", "/", nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = readBody(t, resp)
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			resp, err = f.send(t, context.Background(), c.method, "/", body, c.header...)
			if gotRetry := err == nil; gotRetry != c.wantRetry {
				t.Fatalf("retried: got %v (err %v), want %v", gotRetry, err, c.wantRetry)
			}
			wantDials := 1
			if c.wantRetry {
				wantDials = 2
				if resp.StatusCode != http.StatusOK {
					t.Errorf("retried request: got %d, want 200", resp.StatusCode)
				}
				_ = readBody(t, resp)
			}
			if got := f.dials(); got != wantDials {
				t.Errorf("dials: got %d, want %d", got, wantDials)
			}
			if got := seen.Load(); got != 1 {
				t.Errorf("requests the dying connection read: got %d, want 1", got)
			}
		})
	}
}

// TestUpstreamFreshConnectionNotRetried: a request that fails on the
// connection just dialed for it gets the error; only a pooled connection
// can have died unseen.
func TestUpstreamFreshConnectionNotRetried(t *testing.T) {
	f := newRawFixture(t, func(_ net.Conn, br *bufio.Reader) { _, _ = http.ReadRequest(br) })
	if _, err := f.send(t, context.Background(), "GET", "/", nil); err == nil {
		t.Fatal("round trip: got no error, want the connection's EOF")
	}
	if got := f.dials(); got != 1 {
		t.Errorf("dials: got %d, want 1", got)
	}
}

// TestUpstreamProbesPooledConnection: a pooled connection that the
// upstream closed, or on which it sent bytes nobody asked for, is dropped
// before it carries a request, so even a request that could not be
// retried (POST) goes out on a fresh connection and gets the fresh answer.
func TestUpstreamProbesPooledConnection(t *testing.T) {
	stale := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
	cases := []struct {
		name  string
		after func(c net.Conn) // what the first connection does once idle
	}{
		{"closed by the upstream", func(c net.Conn) { _ = c.Close() }},
		{"bytes unasked", func(c net.Conn) { _, _ = io.WriteString(c, stale) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var conns atomic.Int32
			pooled := make(chan struct{})
			f := newRawFixture(t, func(conn net.Conn, br *bufio.Reader) {
				serveScript(ok2)(conn, br)
				if conns.Add(1) == 1 {
					<-pooled
					c.after(conn)
					_, _ = io.Copy(io.Discard, br) // until egressd closes it
				}
			})
			resp, err := f.send(t, context.Background(), "GET", "/", nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = readBody(t, resp)
			close(pooled)
			f.waitPooledReadable(t)
			resp, err = f.send(t, context.Background(), "POST", "/", nil)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			if got := readBody(t, resp); got != "ok" {
				t.Errorf("POST answer: got %q, want %q", got, "ok")
			}
			if got := f.dials(); got != 2 {
				t.Errorf("dials: got %d, want 2", got)
			}
		})
	}
}

// waitPooledReadable waits until the one idle pooled connection has
// something to read (bytes or the upstream's FIN), without reading it.
func (f *rawFixture) waitPooledReadable(t *testing.T) {
	t.Helper()
	p := f.srv.up.pool
	p.mu.Lock()
	hc := p.newest
	p.mu.Unlock()
	if hc == nil {
		t.Fatal("no pooled connection")
	}
	rc, err := hc.u.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = rc.Control(func(fd uintptr) {
		n, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(waitLimit/time.Millisecond))
	})
	if err != nil || n != 1 {
		t.Fatalf("pooled connection never became readable: %d, %v", n, err)
	}
}

// TestUpstreamCancelled: a request whose client goes away closes its
// upstream connection, wherever the round trip was: waiting for the head,
// streaming the body, or sending the request body. Nothing is left behind:
// no connection, no goroutine.
func TestUpstreamCancelled(t *testing.T) {
	cases := []struct {
		name string
		req  string // raw request, its body possibly incomplete
		path string
	}{
		{"waiting for the head", "GET http://%s/hang HTTP/1.1\r\nHost: %s\r\n\r\n", "/hang"},
		{"streaming the body", "GET http://%s/stream HTTP/1.1\r\nHost: %s\r\n\r\n", "/stream"},
		{"sending the body", "POST http://%s/upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\n0123456789", "/upload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			arrived, gone := make(chan struct{}, 1), make(chan struct{}, 1)
			f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/stream":
					_, _ = io.WriteString(w, "first")
					w.(http.Flusher).Flush()
				case "/upload":
					_ = http.NewResponseController(w).EnableFullDuplex()
				}
				arrived <- struct{}{}
				if r.URL.Path == "/upload" {
					_, _ = io.Copy(io.Discard, r.Body) // fails when egressd closes
				}
				<-r.Context().Done()
				gone <- struct{}{}
			}})
			base := requestGoroutines()
			g := f.hp("granted.test")
			conn := f.dial()
			if _, err := io.WriteString(conn, strings.ReplaceAll(c.req, "%s", g)); err != nil {
				t.Fatal(err)
			}
			wait(t, arrived, "the request never reached the upstream")
			if c.path == "/stream" {
				br := bufio.NewReader(conn)
				if _, err := http.ReadResponse(br, nil); err != nil {
					t.Fatalf("head: %v", err)
				}
			}
			_ = conn.Close()
			wait(t, gone, "the upstream connection stayed open")
			waitFor(t, "no upstream connection and the goroutines of before", func() bool {
				return f.srv.Len() == 0 && requestGoroutines() <= base
			})
		})
	}
}

// TestUpstreamContext: the round trip ends with its context, closing its
// connection; a context that ended before spends no pooled connection.
func TestUpstreamContext(t *testing.T) {
	t.Run("ends while waiting", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		f := newRawFixture(t, func(_ net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err == nil {
				arrived <- struct{}{}
			}
			_, _ = io.Copy(io.Discard, br)
		})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-arrived
			cancel()
		}()
		if _, err := f.send(t, ctx, "GET", "/", nil); !errors.Is(err, context.Canceled) {
			t.Errorf("round trip: got %v, want context.Canceled", err)
		}
		waitFor(t, "no upstream connection", func() bool { return f.srv.Len() == 0 })
	})

	t.Run("context ended before", func(t *testing.T) {
		f := newRawFixture(t, serveScript(ok2, ok2))
		resp, err := f.send(t, context.Background(), "GET", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = readBody(t, resp)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := f.send(t, ctx, "GET", "/", nil); !errors.Is(err, context.Canceled) {
			t.Errorf("round trip: got %v, want context.Canceled", err)
		}
		if n := f.srv.Len(); n != 1 {
			t.Errorf("open upstream connections: got %d, want the pooled one left alone", n)
		}
	})
}

// TestUpstreamUpgradeHandsOverConnection: a 101 makes the connection the
// response body. Bytes the upstream sent right behind the 101 head reach
// the client, both directions flow, and the connection never returns to
// the pool.
func TestUpstreamUpgradeHandsOverConnection(t *testing.T) {
	f := newRawFixture(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhello")
		_, _ = io.Copy(c, br)
	})
	c := f.dial()
	br := bufio.NewReader(c)
	resp, _ := sendRaw(t, c, br, "GET http://"+f.raw+"/ws HTTP/1.1\r\nHost: "+f.raw+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %d, want 101", resp.StatusCode)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(br, first); err != nil || string(first) != "hello" {
		t.Fatalf("bytes behind the 101: got %q, %v, want %q", first, err, "hello")
	}
	echo(t, c, br, "frame-1")
	_ = c.Close()
	waitFor(t, "the upgraded connection closed", func() bool { return f.srv.Len() == 0 })
	p := f.srv.up.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idleCount != 0 {
		t.Errorf("idle pooled connections: got %d, want 0", p.idleCount)
	}
}

func wait(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatal(msg)
	}
}

// requestGoroutines counts the goroutines other than the listener's own
// (Serve's accept loop and the net/http server it feeds), which start on
// their own schedule after the fixture returns.
func requestGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "proxy.(*Server).Serve") {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, failing after waitLimit: for states
// that settle in other goroutines with nothing to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}
