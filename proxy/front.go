package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
	"github.com/egressd/egressd/proxy/internal/httphead"
)

// Why the proxy reads each connection's first bytes itself: see
// httphead.ParseConnect. A connection that opens with a plain CONNECT, is
// under its caps, names a target that parses, and is not about to be put
// to a person (ask:), is served here: the pipeline, refusals and tunnel of
// ServeHTTP's CONNECT branch, without net/http's connection, request and
// hijack. Every other connection goes to net/http through handoff with
// the bytes read so far, and is served as it would have been without the
// front reader, within the same timeouts.header (clientConn.headBy).

// frontBufSize is what the front reader reads a head into: net/http's
// own read buffer, so a connection handed over with what was read never
// holds more than net/http's first read takes.
const frontBufSize = 4 << 10

var frontBufs = sync.Pool{New: func() any { b := make([]byte, frontBufSize); return &b }}

// Serve accepts proxy clients on ln until Shutdown. Like http.Server it
// returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	h := &handoff{Listener: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	served := make(chan error, 1)
	go func() {
		err := s.srv.Serve(h)
		_ = h.Close() // also when Shutdown came first and Serve never accepted
		served <- err
	}()
	err := s.accept(&listener{Listener: ln, s: s}, h)
	_ = h.Close()
	if serr := <-served; errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// accept is the accept loop. Like net/http's, it waits and retries after a
// temporary error (out of descriptors) instead of giving up.
func (s *Server) accept(ln *listener, h *handoff) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // the test net/http makes
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("proxy accept failed; retrying", "err", err, "in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		cc := c.(*clientConn)
		if d := s.srv.ReadHeaderTimeout; d > 0 {
			// Set here, before the connection is in s.fronts, so that
			// Shutdown's deadline (frontSet.close) is always the later one.
			by := time.Now().Add(d)
			cc.headBy.Store(by.UnixNano())
			_ = cc.Conn.SetReadDeadline(by)
		}
		s.busy.add(1)
		if !s.fronts.add(cc) {
			_ = cc.Close()
			s.busy.add(-1)
			continue
		}
		go s.serveFront(cc, h)
	}
}

// serveFront reads the connection's first bytes, then serves a plain
// CONNECT or hands the connection to net/http.
func (s *Server) serveFront(cc *clientConn, h *handoff) {
	defer s.busy.add(-1)
	defer s.recoverFront(cc)
	buf := frontBufs.Get().(*[]byte)
	n, head, st, err := s.readFront(cc, *buf)
	if !s.fronts.remove(cc) {
		n, st = 0, httphead.ConnectMore // shutting down
	}
	var rq *request
	if st == httphead.ConnectPlain {
		rq = s.frontRequest(cc, head)
	}
	var pre []byte
	switch {
	case rq != nil:
		if n > head.Len {
			pre = append(pre, (*buf)[head.Len:n]...)
		}
	case n > 0 && !(st == httphead.ConnectMore && isTimeout(err)):
		pre = append(pre, (*buf)[:n]...)
	}
	frontBufs.Put(buf)
	switch {
	case rq != nil:
		s.serveFrontConnect(cc, rq, head, pre)
	case pre != nil:
		s.handOff(cc, h, pre)
	default:
		// Nothing read, or a head cut off by timeouts.header: net/http
		// closes such a connection without an answer, and so does this.
		_ = cc.Close()
	}
}

// recoverFront contains a panic to its connection, as net/http does for a
// handler's: logged with its stack, the connection closed, the proxy
// serving on.
func (s *Server) recoverFront(cc *clientConn) {
	if v := recover(); v != nil {
		s.log.Error("proxy: panic serving a connection", "client", cc.name, "panic", v, "stack", string(debug.Stack()))
		s.fronts.remove(cc)
		_ = cc.Close()
	}
}

// readFront reads until the bytes are not a plain CONNECT's prefix, the
// buffer is full, or the read fails (at timeouts.header: see accept).
func (s *Server) readFront(cc *clientConn, buf []byte) (int, httphead.Connect, httphead.ConnectState, error) {
	n := 0
	for {
		m, err := cc.Conn.Read(buf[n:])
		n += m
		head, st := httphead.ParseConnect(buf[:n])
		switch {
		case st != httphead.ConnectMore:
			return n, head, st, nil
		case err != nil:
			return n, head, st, err
		case n == len(buf):
			return n, head, httphead.ConnectOther, nil
		}
	}
}

// frontRequest is the request for a plain CONNECT head, or nil when
// net/http is to serve it: the connection is over a cap (its one 503),
// the target does not parse (net/http's words for it), or the decision is
// a denial a person would be asked about (the hold waits on the request
// context net/http cancels when the client leaves). All three are
// decided without a side effect, so nothing is counted twice.
func (s *Server) frontRequest(cc *clientConn, head httphead.Connect) *request {
	if cc.over {
		return nil
	}
	rq := &request{start: s.now(), method: http.MethodConnect, pol: s.policy(), proto: vocab.ProtoConnect,
		client: cc.ip, cname: cc.name, cc: cc}
	if connectTarget(head.Target, rq).denied() {
		return nil
	}
	if s.cfg.Ask != nil {
		if d := rq.pol.Decide(rq.policyRequest()); d.Verdict == vocab.Deny && rq.pol.Askable(d.Reason) {
			return nil
		}
	}
	return rq
}

// frontResponse is the http.ResponseWriter of a CONNECT the front reader
// read, for Server.deny: one answer, framed as net/http frames it, written
// through the connection's status-line rewriter (armRefusal) in one write.
type frontResponse struct {
	cc     *clientConn
	http10 bool
	header http.Header
	status int
}

func (w *frontResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *frontResponse) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

// Write sends the head and p as the whole body.
func (w *frontResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	h := w.Header().Clone()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.Itoa(len(p)))
	proto := "HTTP/1.1 "
	if w.http10 {
		proto = "HTTP/1.0 "
	}
	var b bytes.Buffer
	b.WriteString(proto + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.Write(p)
	if _, err := w.cc.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline bounds the write to the client (armWrite).
func (w *frontResponse) SetWriteDeadline(t time.Time) error { return w.cc.Conn.SetWriteDeadline(t) }

// serveFrontConnect is ServeHTTP's CONNECT branch for a head the front
// reader read. A refusal closes the connection as net/http does after an
// answer with Connection: close (lingerClose).
func (s *Server) serveFrontConnect(cc *clientConn, rq *request, head httphead.Connect, early []byte) {
	cc.headBy.Store(0)
	_ = cc.Conn.SetReadDeadline(time.Time{})
	cc.startServing()
	w := &frontResponse{cc: cc, http10: head.HTTP10}
	if dn := s.limitClient(rq); dn.denied() {
		// ServeHTTP limits the client (step 3) before it parses the
		// target (step 4): the same answer and line, without a target.
		rq.host, rq.ip, rq.port = "", netip.Addr{}, 0
		s.deny(w, rq, dn, true)
	} else {
		// s.life, not a request context: nothing here notices a client
		// that hangs up before its answer, so a lookup or dial for it
		// runs to its timeouts.dial, as a bound on what it can hold.
		s.serveConnect(connectCall{ctx: s.life, w: w, http10: head.HTTP10, front: true, early: early}, rq, cc)
	}
	if w.status != 0 {
		lingerClose(cc)
	}
}

// handOff gives the connection to net/http, which reads pre first.
func (s *Server) handOff(cc *clientConn, h *handoff, pre []byte) {
	cc.pre = pre
	select {
	case h.conns <- cc:
	case <-h.done:
		_ = cc.Close()
	}
}

// rstAvoidance is how long lingerClose waits for the client to close
// first; net/http waits as long after an answer with Connection: close.
const rstAvoidance = 500 * time.Millisecond

// lingerClose closes a refused connection the way net/http does: the
// write side first, then, until the client closes or rstAvoidance has
// passed, whatever it still sends is read and dropped. Closing with its
// bytes unread would send a reset, which can destroy the refusal before
// the client has read it.
func lingerClose(cc *clientConn) {
	_ = closeWrite(cc.Conn)
	_ = cc.Conn.SetReadDeadline(time.Now().Add(rstAvoidance))
	var b [512]byte
	for {
		if _, err := cc.Conn.Read(b[:]); err != nil {
			break
		}
	}
	_ = cc.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handoff is the listener net/http serves: the connections the front
// reader passes on. Closing it closes the real listener, which ends the
// accept loop.
type handoff struct {
	net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	err := net.ErrClosed
	h.once.Do(func() {
		close(h.done)
		err = h.Listener.Close()
	})
	return err
}

// frontSet holds the connections whose first bytes are being read, so
// Shutdown can end those reads (net/http closes its connections that sit
// before their first request in the same way).
type frontSet struct {
	mu     sync.Mutex
	conns  map[*clientConn]struct{}
	closed bool
}

// add registers c; false once the set is closed.
func (f *frontSet) add(c *clientConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	if f.conns == nil {
		f.conns = make(map[*clientConn]struct{})
	}
	f.conns[c] = struct{}{}
	return true
}

// remove unregisters c; false when the set was closed meanwhile.
func (f *frontSet) remove(c *clientConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
	return !f.closed
}

// close ends every read in progress and refuses later connections.
func (f *frontSet) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}
