package proxy

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/proxy/internal/httphead"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/lib/statusline"
	"github.com/egressd/egressd/internal/shared/declog"
)

// listener counts client connections against limits.max_conns and
// limits.max_conns_per_client. A connection over a cap is still served one
// answer (503 too_many_connections, then closed) so the client learns why;
// beyond twice a cap connections are closed at once, which bounds what a
// flood can hold open.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := netaddr.Of(c.RemoteAddr())
		lim := l.s.policy().Config().Limits
		over, reject := l.s.conns.add(ip, lim.MaxConns, lim.MaxConnsPerClient)
		if !reject {
			return &clientConn{Conn: c, s: l.s, ip: ip, name: netaddr.String(ip), over: over}, nil
		}
		l.s.conns.remove(ip)
		_ = c.Close()
		l.s.rec.Record(declog.Entry{
			Time: l.s.now(), Event: vocab.EventDecision, Client: netaddr.String(ip),
			Proto: vocab.ProtoHTTP, Verdict: vocab.Deny, Reason: vocab.ReasonTooManyConnections,
		})
	}
}

// connCounter counts open client connections, in total and per client IP.
// The map holds only clients with open connections, so it is bounded by
// the connections themselves.
type connCounter struct {
	mu    sync.Mutex
	total int
	per   map[netip.Addr]int
}

func (c *connCounter) add(ip netip.Addr, maxTotal, maxPer int) (over, reject bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.per == nil {
		c.per = make(map[netip.Addr]int)
	}
	c.total++
	c.per[ip]++
	n := c.per[ip]
	over = (maxTotal > 0 && c.total > maxTotal) || (maxPer > 0 && n > maxPer)
	reject = (maxTotal > 0 && c.total > 2*maxTotal) || (maxPer > 0 && n > 2*maxPer)
	return over, reject
}

func (c *connCounter) remove(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.per[ip]--; c.per[ip] <= 0 {
		delete(c.per, ip)
	}
}

// clientConn is one accepted client connection. It releases its cap slot
// on Close (also after goproxy hijacked it), feeds what the HTTP server
// reads to the Host-header parser until the connection becomes a tunnel,
// and turns the answers net/http writes on its own into logged refusals
// (refuse.go).
type clientConn struct {
	net.Conn
	s    *Server
	ip   netip.Addr
	name string // ip's log spelling, for every entry about the connection
	over bool

	sniffed atomic.Bool
	connect atomic.Bool // the first bytes were a CONNECT
	heads   atomic.Pointer[httphead.Parser]
	closed  sync.Once

	serving atomic.Bool // a handler runs (ServeHTTP until connState)
	refused atomic.Bool // egressd answered a request net/http refused

	line statusline.Rewriter // the reason phrase of egressd's refusals (armRefusal)

	// pre is what the front reader read before handing the connection to
	// net/http, which reads it first; only the reading goroutine uses it.
	pre []byte
	// headBy (Unix nanoseconds, 0 for none) is the front reader's
	// timeouts.header deadline, which the first head net/http reads keeps
	// (SetReadDeadline) until connState sees it read.
	headBy atomic.Int64
}

var connectPrefix = []byte("CONNECT ")

func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.observe(p[:n])
		if c.pre = c.pre[n:]; len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.observe(p[:n])
	}
	return n, err
}

// observe starts the parser on the first bytes unless the connection
// opens with CONNECT: such a connection is either hijacked into a tunnel
// or closed after its denial, so it never carries a plain request (and
// admit refuses one if it tried).
func (c *clientConn) observe(p []byte) {
	if c.sniffed.CompareAndSwap(false, true) {
		if bytes.HasPrefix(p, connectPrefix) {
			c.connect.Store(true)
		} else {
			c.heads.Store(httphead.New(c.s.headLimit()))
		}
	}
	if hp := c.heads.Load(); hp != nil {
		hp.Feed(p)
	}
}

// SetReadDeadline keeps a deadline net/http sets while it reads the first
// head no later than the front reader's, so a client gets one
// timeouts.header for its first head, not one per reader. Clearing a
// deadline is never held back.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	if by := c.headBy.Load(); by != 0 && !t.IsZero() && t.UnixNano() > by {
		t = time.Unix(0, by)
	}
	return c.Conn.SetReadDeadline(t)
}

// parser returns the connection's Host-header parser, nil after detach or
// for a connection that opened with CONNECT.
func (c *clientConn) parser() *httphead.Parser {
	if c == nil {
		return nil
	}
	return c.heads.Load()
}

// startServing marks that a handler runs on the connection, so what it
// writes is egressd's own response (see refuse.go).
func (c *clientConn) startServing() {
	if c != nil {
		c.serving.Store(true)
		c.line.Disarm()
	}
}

// takePre returns and forgets what is left of the front reader's bytes.
func (c *clientConn) takePre() []byte {
	if c == nil {
		return nil
	}
	p := c.pre
	c.pre = nil
	return p
}

// detach stops the parser: the bytes that follow are a tunnel's.
func (c *clientConn) detach() {
	if c == nil {
		return
	}
	if hp := c.heads.Swap(nil); hp != nil {
		hp.Close()
	}
}

func (c *clientConn) Close() error {
	c.closed.Do(func() {
		c.s.conns.remove(c.ip)
		c.detach()
	})
	return c.Conn.Close()
}

// rawTCP is the accepted TCP connection under c, which a tunnel relays
// directly (splice); nil when it is not TCP, or c is nil. Call it only
// after detach: from then on c holds no bytes of its own, so reading the
// raw connection loses nothing.
func (c *clientConn) rawTCP() *net.TCPConn {
	if c == nil {
		return nil
	}
	tc, _ := c.Conn.(*net.TCPConn)
	return tc
}

// CloseWrite half-closes when the connection supports it.
func (c *clientConn) CloseWrite() error { return closeWrite(c.Conn) }

// CloseRead half-closes when the connection supports it.
func (c *clientConn) CloseRead() error { return closeRead(c.Conn) }

type clientConnKey struct{}

// withClientConn is the http.Server's ConnContext hook.
func withClientConn(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*clientConn); ok {
		return context.WithValue(ctx, clientConnKey{}, cc)
	}
	return ctx
}

func clientConnFrom(ctx context.Context) *clientConn {
	cc, _ := ctx.Value(clientConnKey{}).(*clientConn)
	return cc
}
