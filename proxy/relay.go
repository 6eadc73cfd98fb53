package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/lib/bufpool"
)

// respWriter flushes every write, so streamed responses (SSE, chunked)
// reach the client as the upstream sends them, and counts what it relays.
// Every write to the client is bounded by timeouts.idle (armWrite): a
// client that stops reading is cut instead of holding the handler, the
// upstream connection and the connection slot for ever.
type respWriter struct {
	http.ResponseWriter
	cc       *clientConn
	idle     time.Duration // bound on one write to the client
	status   int
	down     int64
	hijacked *hijackedConn
}

func newRespWriter(w http.ResponseWriter, cc *clientConn, rq *request) *respWriter {
	return &respWriter{ResponseWriter: w, cc: cc, idle: idleTimeout(rq.pol)}
}

func (w *respWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	n, err := w.ResponseWriter.Write(p)
	w.down += int64(n)
	w.flush()
	return n, err
}

// Flush implements http.Flusher.
func (w *respWriter) Flush() {
	w.arm()
	w.flush()
}

func (w *respWriter) flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// arm starts a fresh write deadline for the client connection, unless it
// was hijacked (hijackedConn bounds its own writes). It is also called once
// the handler is done, for what net/http writes after it.
func (w *respWriter) arm() {
	if w.hijacked == nil {
		armWrite(w.ResponseWriter, w.idle)
	}
}

// writeDeadliner is net/http's ResponseWriter: SetWriteDeadline applies
// to the client connection.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// armWrite bounds the writes to w's client connection to d from now.
func armWrite(w http.ResponseWriter, d time.Duration) {
	if wd, ok := w.(writeDeadliner); ok {
		_ = wd.SetWriteDeadline(time.Now().Add(d))
	}
}

// abort closes the client connection now, with whatever of the response
// was sent: net/http would otherwise read the next request from a stream
// whose framing is lost (a request body that failed after the upstream
// had already answered).
func (w *respWriter) abort() {
	if w.hijacked != nil {
		_ = w.hijacked.Close()
		return
	}
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return
	}
	w.cc.detach()
	if c, _, err := hj.Hijack(); err == nil {
		_ = c.Close()
	}
}

// ReadFrom relays a body with a pooled buffer (io.Copy would allocate one
// per response) and flushes after each read, however small.
func (w *respWriter) ReadFrom(src io.Reader) (int64, error) {
	bp := bufpool.Get()
	defer bufpool.Put(bp)
	var total int64
	for {
		n, rerr := src.Read(*bp)
		if n > 0 {
			m, werr := w.Write((*bp)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Hijack hands the client connection to goproxy for an upgraded
// connection; the Host-header tracker stops first, since what
// follows is not HTTP.
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	w.cc.detach()
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = &hijackedConn{Conn: c, idle: w.idle}
	// The server may have read some of the client's first bytes already;
	// goproxy replays them from brw, so count them here.
	w.hijacked.up.Add(int64(brw.Reader.Buffered()))
	return w.hijacked, brw, nil
}

// finish closes a connection goproxy hijacked for an upgrade (it leaves it
// open when one direction ends) and returns the bytes relayed.
func (w *respWriter) finish() (up, down int64) {
	down = w.down
	if h := w.hijacked; h != nil {
		_ = h.Close()
		u, d := h.counts()
		up += u
		down += d
	}
	return up, down
}

// hijackedConn counts an upgraded connection's bytes and keeps the half-close
// methods goproxy's relay looks for. Each write to the client is bounded
// by timeouts.idle, so a client that stops reading is cut even while its
// own bytes keep the upstream side busy.
type hijackedConn struct {
	net.Conn
	idle     time.Duration
	up, down atomic.Int64
	// Held across a Read or Write and its count: goproxy stops waiting
	// when one direction ends, and the other's last write may have reached
	// the client without being counted yet (see counts).
	rmu, wmu sync.Mutex
}

func (c *hijackedConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.Conn.Read(p)
	c.up.Add(int64(n))
	return n, err
}

func (c *hijackedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.down.Add(int64(n))
	return n, err
}

// counts returns the bytes read and written, after waiting for a Read or
// Write in progress to be counted. Call it after Close, which ends them.
func (c *hijackedConn) counts() (up, down int64) {
	c.rmu.Lock()
	up = c.up.Load()
	c.rmu.Unlock()
	c.wmu.Lock()
	down = c.down.Load()
	c.wmu.Unlock()
	return up, down
}

// WriteTo lets goproxy's io.Copy of an upgraded connection use a pooled
// buffer.
func (c *hijackedConn) WriteTo(w io.Writer) (int64, error) { return bufpool.Copy(w, c) }

// CloseWrite half-closes when the connection supports it.
func (c *hijackedConn) CloseWrite() error { return closeWrite(c.Conn) }

// CloseRead half-closes when the connection supports it.
func (c *hijackedConn) CloseRead() error { return closeRead(c.Conn) }

func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

func closeRead(c net.Conn) error {
	if hc, ok := c.(interface{ CloseRead() error }); ok {
		return hc.CloseRead()
	}
	return nil
}

// countingBody counts request body bytes sent upstream and keeps the first
// error reading them. The upstream client reads it in a goroutine of its
// own, while the handler relays the response.
type countingBody struct {
	io.ReadCloser
	n   atomic.Int64
	bad atomic.Pointer[readFailure]

	// The client's connection and how long one read of the body may wait
	// for bytes: http.Server has no such limit once the head is read
	// (egressd sets no ReadTimeout, which would also cut slow uploads), so
	// without it a client that announces a body and stops sending holds a
	// handler and an upstream connection for good. nil conn: no limit.
	conn net.Conn
	idle time.Duration
	done atomic.Bool // a read returned EOF or an error
}

type readFailure struct{ err error }

func (b *countingBody) Read(p []byte) (int, error) {
	b.arm()
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil {
		// Done: at EOF net/http starts its background read of the next
		// request and clears the deadline itself; after any other error
		// the connection is closed. No deadline is set after this.
		b.done.Store(true)
		if err != io.EOF {
			b.bad.CompareAndSwap(nil, &readFailure{err})
		}
	}
	return n, err
}

// Close bounds net/http's discard of an unread rest of the body (it
// reads up to 256 KiB from the client) by the same idle limit.
func (b *countingBody) Close() error {
	b.arm()
	return b.ReadCloser.Close()
}

// arm gives the next read from the client idle to return, unless the
// body is done: then net/http's own background read may be running,
// which a deadline would cut.
func (b *countingBody) arm() {
	if b.conn != nil && !b.done.Load() {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
}

// failure is the first error reading the client's body, nil if none; nil
// also for a request without a body (b == nil).
func (b *countingBody) failure() error {
	if b == nil {
		return nil
	}
	if f := b.bad.Load(); f != nil {
		return f.err
	}
	return nil
}
