package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// bigBody is what the stalled-reader upstreams offer at most: far more than
// any socket buffers between them and a client that never reads.
const bigBody = 64 << 20

// stalledClient dials the proxy with a tiny receive buffer, so egressd's
// writes to it block soon after it stops reading.
func stalledClient(t *testing.T, e *env) net.Conn {
	t.Helper()
	c := e.dial()
	if err := c.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientThatNeverReadsIsCut: a plain-HTTP client that stops reading a
// large response is cut once a write to it has been blocked for
// timeouts.idle; the request's close entry is logged, with less than the
// whole body sent.
func TestClientThatNeverReadsIsCut(t *testing.T) {
	f := newFixture(t, fixOpts{
		timeouts: "  header: 2s\n  idle: 300ms\n",
		httpH: func(w http.ResponseWriter, _ *http.Request) {
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < bigBody; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		},
	})
	c := stalledClient(t, f.env)
	if _, err := io.WriteString(c, getReq("http://"+f.hp("granted.test")+"/big", f.hp("granted.test"))); err != nil {
		t.Fatal(err)
	}
	cl := f.rec.WaitFor(t, waitLimit, "close entry of the stalled request", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Proto == vocab.ProtoHTTP
	})
	if cl.BytesDn >= bigBody {
		t.Errorf("close entry: %d bytes down, want fewer than the %d-byte body", cl.BytesDn, bigBody)
	}
	// Reading to see the close would take long (the unread bytes queue in
	// front of it behind a 4 KiB window), so ask the connection counter.
	f.waitNoClientConns(t)
}

// waitNoClientConns waits until egressd holds no client connection.
func (e *env) waitNoClientConns(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		e.srv.conns.mu.Lock()
		n := e.srv.conns.total
		e.srv.conns.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("egressd still holds %d client connections after %v", n, waitLimit)
		}
		<-tick.C
	}
}

// firehose is a TCP upstream that sends up to bigBody bytes and discards
// whatever it receives: a tunnel peer that never lets the tunnel go idle.
func firehose(t *testing.T) int {
	return tcpServer(t, func(c net.Conn) {
		// The writer ends with a write error once c is closed, which
		// tcpServer does when the reads below end.
		go func() {
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < bigBody; sent += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		_, _ = io.Copy(io.Discard, c)
	})
}

// TestTunnelClientThatNeverReadsIsCut: a tunnel client that keeps sending
// (so the tunnel is never idle) but never reads is cut once egressd's
// write to it has been blocked for timeouts.idle.
func TestTunnelClientThatNeverReadsIsCut(t *testing.T) {
	fire := firehose(t)
	f := newFixture(t, fixOpts{
		timeouts:   "  header: 2s\n  idle: 300ms\n",
		extraAllow: func(*fixture) string { return "  - {host: fire.test, ports: [" + strconv.Itoa(fire) + "]}\n" },
	})
	f.res.set("fire.test", "127.0.0.1")
	c := stalledClient(t, f.env)
	target := "fire.test:" + strconv.Itoa(fire)
	if _, err := io.WriteString(c, connectReq(target)); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: got %v %v, want 200", target, resp, err)
	}
	// Keep bytes flowing up, paced, until egressd cuts the connection or
	// the wait below gives up.
	defer keepWriting(c)()
	cl := f.rec.WaitFor(t, waitLimit, "close entry of the stalled tunnel", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Proto == vocab.ProtoConnect
	})
	if cl.BytesDn >= bigBody {
		t.Errorf("close entry: %d bytes down, want fewer than the %d bytes offered", cl.BytesDn, bigBody)
	}
	f.waitNoClientConns(t)
}
