package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/proxy/internal/sockio"
)

// Why egressd relays tunnels itself rather than through goproxy's
// ConnectAccept: goproxy copies between the connections it is given, which
// for egressd were wrappers (for counting, inspection and deadlines), so
// every byte went through a user-space buffer and every idle tunnel held
// two of them, on three goroutines. Here, once the SNI check has passed,
// both ends are the raw *net.TCPConn and a bulk direction moves by
// splice(2) (TCPConn.ReadFrom); what the wrappers did is done without
// them: byte counts come back from ReadFrom, idleness and a client that
// stopped reading are read from the kernel's TCP_INFO (tunnel.checkIdle),
// and a tunnel waiting for bytes holds no buffer (sockio.Reader). Two
// goroutines per tunnel, one per direction.

// spliceAfter is how many bytes one direction of a tunnel relays through a
// pooled buffer before it hands over to splice(2): splice pays for a pipe
// and two calls per chunk, which short tunnels (a request and its answer)
// would not earn back; bulk transfers leave user space after two reads.
const spliceAfter = 64 << 10

// The CONNECT answers, by the request's HTTP version (as goproxy did).
var (
	established11 = []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	established10 = []byte("HTTP/1.0 200 Connection established\r\n\r\n")
)

// tunnel is the client end of an established CONNECT; its upConn is the
// upstream end and the registered, revocable part.
type tunnel struct {
	u      *upConn
	client net.Conn // what the relay reads and writes: the raw *net.TCPConn when there is one
	conn   net.Conn // what net/http handed over; its Close frees the cap slot
	// kernel: both ends are TCP sockets on Linux (4.6 or later), so the
	// relay may splice and idleness is read from TCP_INFO. Otherwise every byte goes through
	// a buffer, touch() tracks idleness and writes to the client carry a
	// deadline, as for upgraded HTTP connections.
	kernel           bool
	clientRaw, upRaw syscall.RawConn // kernel mode: both sockets, for reads and TCP_INFO
	left             atomic.Int32    // relay directions still running
	spliced          atomic.Int32    // directions that went over to splice

	early      []byte        // client bytes net/http had buffered (see hijack)
	fromClient sockio.Reader // used by relayUp only
	fromUp     sockio.Reader // used by relayDown only

	// Whether the client takes what is sent to it; only checkIdle (the
	// idle timer, which re-arms itself) reads and writes these.
	stalled    bool
	stallAcked uint64
	stallSince time.Duration
}

// serveTunnel carries out an allowed CONNECT: it takes the connection from
// net/http (unless the front reader read it), dials the checked addresses,
// answers 200 and starts the relay. The handler returns then, so
// net/http's per-connection state (its read and write buffers) is not held
// for the tunnel's life.
func (s *Server) serveTunnel(cr connectCall, rq *request, cc *clientConn) {
	conn, early, ok := net.Conn(cc), cr.early, true
	if !cr.front {
		conn, early, ok = s.hijack(cr.w, rq, cc)
	}
	if !ok {
		return
	}
	up, ap, err := s.dialChecked(cr.ctx, rq)
	if err != nil {
		s.log.Warn("proxy dial failed", "proto", "connect", "host", rq.host, "port", rq.port, "err", err)
		s.recordClose(rq, vocab.ReasonNone, http.StatusBadGateway, 0, 0)
		s.connectFailed(conn, rq, err)
		return
	}
	t := &tunnel{client: conn, conn: conn}
	if tc := cc.rawTCP(); tc != nil {
		t.client = tc
	}
	t.setKernel(up)
	u := &upConn{Conn: up, s: s, rq: rq, addr: ap, tun: t, idle: idleTimeout(rq.pol)}
	t.u = u
	u.inspecting.Store(!rq.ip.IsValid())
	s.busy.add(1)
	s.track(u)
	if s.revokedSince(u) {
		s.connectFailed(conn, rq, errRevoked)
		u.end(vocab.ReasonRevoked)
		t.finish(http.StatusBadGateway)
		return
	}
	if s.life.Err() != nil {
		// Shutdown gave up and closed every tunnel registered before it
		// ended s.life; this one was registered after, or it would be
		// closed already, so it closes itself.
		s.connectFailed(conn, rq, errShutdown)
		u.end(vocab.ReasonNone)
		t.finish(http.StatusBadGateway)
		return
	}
	reply := established11
	if cr.http10 {
		reply = established10
	}
	if _, err := t.client.Write(reply); err != nil {
		u.end(vocab.ReasonNone)
		t.finish(http.StatusOK)
		return
	}
	t.early = early
	t.left.Store(2)
	go t.relayUp()
	go t.relayDown()
}

// hijack takes the client connection from net/http, with the bytes its
// reader had already buffered past the CONNECT head (a client may send its
// ClientHello without waiting for the 200). They stay in net/http's buffer,
// which nothing else reads any more, until relayUp has passed them on.
func (s *Server) hijack(w http.ResponseWriter, rq *request, cc *clientConn) (net.Conn, []byte, bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// net/http's HTTP/1 connections always can; nothing else reaches here.
		http.Error(w, "egressd: this connection cannot carry a tunnel", http.StatusInternalServerError)
		s.recordClose(rq, vocab.ReasonNone, http.StatusInternalServerError, 0, 0)
		return nil, nil, false
	}
	cc.detach()
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.log.Warn("proxy hijack failed", "host", rq.host, "port", rq.port, "err", err)
		s.recordClose(rq, vocab.ReasonNone, http.StatusInternalServerError, 0, 0)
		return nil, nil, false
	}
	// Hijack moved a byte net/http's background read may have taken into
	// brw.Reader, so everything the client sent so far is either here or
	// still in the socket. An empty slice would still pin net/http's 4 KiB
	// buffer for the tunnel's life, so none is kept.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n)
	}
	if rest := cc.takePre(); rest != nil {
		// What the front reader read and net/http had not yet taken.
		early = append(early[:len(early):len(early)], rest...)
	}
	return conn, early, true
}

// connectFailed answers a CONNECT whose dial failed and closes the client
// connection.
func (s *Server) connectFailed(conn net.Conn, rq *request, err error) {
	body := "egressd: could not connect to " + rq.targetString() + ": " + errCause(err) + "\n"
	_ = conn.SetWriteDeadline(time.Now().Add(idleTimeout(rq.pol)))
	_, _ = io.WriteString(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	_ = conn.Close()
}

var errShutdown = errors.New("egressd is shutting down")

// noConnectDial is goproxy's CONNECT dialer. CONNECT never reaches goproxy
// (serveTunnel relays tunnels), and should one ever, goproxy must not dial
// on its own: it would skip every check.
func noConnectDial(*http.Request, string, string) (net.Conn, error) {
	return nil, errors.New("tunnels are relayed by egressd, not goproxy")
}

// relayUp copies client → upstream: first the bytes net/http had buffered,
// then through u.Write (which holds them back until the SNI check passes)
// and, once the check is done and the direction has carried spliceAfter
// bytes, by splice.
func (t *tunnel) relayUp() {
	u := t.u
	var err error
	if t.early != nil {
		_, err = u.Write(t.early)
		t.early = nil
	}
	more := false
	if err == nil {
		more, err = t.copyBuffered(&t.fromClient, t.client, t.clientRaw, false)
	}
	if more {
		t.spliced.Add(1)
		var n int64
		n, err = u.Conn.(*net.TCPConn).ReadFrom(t.client)
		u.up.Add(n)
	}
	t.done(err, u.Conn)
}

// relayDown copies upstream → client, by splice after spliceAfter bytes.
func (t *tunnel) relayDown() {
	u := t.u
	more, err := t.copyBuffered(&t.fromUp, u.Conn, t.upRaw, true)
	if more {
		t.spliced.Add(1)
		var n int64
		n, err = t.client.(*net.TCPConn).ReadFrom(u.Conn)
		u.down.Add(n)
	}
	t.done(err, t.client)
}

// copyBuffered relays src through pooled buffers (to the client when down,
// else through u.Write) until EOF (false, nil), an error, or, when the
// tunnel can splice, until spliceAfter bytes have passed (and, upwards,
// the SNI check is done): then it returns true and the caller splices the
// rest.
func (t *tunnel) copyBuffered(r *sockio.Reader, src net.Conn, rc syscall.RawConn, down bool) (bool, error) {
	r.Init(src, rc)
	moved := 0
	for {
		if t.kernel && moved >= spliceAfter && (down || !t.u.inspecting.Load()) {
			return true, nil
		}
		p, err := r.Read()
		if len(p) > 0 {
			var werr error
			if down {
				_, werr = t.writeClient(p)
			} else {
				_, werr = t.u.Write(p)
			}
			moved += len(p)
			if werr != nil {
				err = werr
			}
		}
		r.Release()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// writeClient sends upstream bytes to the client and counts them. Without
// TCP_INFO to tell a client that stopped reading (checkIdle), each write
// must finish within timeouts.idle.
func (t *tunnel) writeClient(p []byte) (int, error) {
	if !t.kernel {
		_ = t.client.SetWriteDeadline(time.Now().Add(t.u.idle))
		t.u.touch()
	}
	n, err := t.client.Write(p)
	t.u.down.Add(int64(n))
	return n, err
}

// done ends one direction: at EOF the half-close is passed on (dst gets
// FIN), on an error the whole tunnel ends, so the other direction is not
// left blocked. The last direction to finish closes both ends (their FIN,
// when at EOF: nothing is left unread) and logs the close.
func (t *tunnel) done(err error, dst net.Conn) {
	if err != nil {
		t.u.end(vocab.ReasonNone)
	}
	if t.left.Add(-1) == 0 {
		t.finish(http.StatusOK)
		return
	}
	if err == nil {
		_ = closeWrite(dst)
	}
}

// finish closes both ends, if nothing else did, and logs the tunnel's close
// entry with why it ended and the bytes each way.
func (t *tunnel) finish(status int) {
	u := t.u
	u.end(vocab.ReasonNone)
	u.s.recordClose(u.rq, u.endReason(), status, u.up.Load(), u.down.Load())
	u.s.busy.add(-1)
}

// closeClient closes the client end (upConn.end).
func (t *tunnel) closeClient() { _ = t.conn.Close() }

// setKernel decides whether the tunnel relays in the kernel: where
// sockio.Kernel allows, with both ends raw TCP sockets (Config.Dial may
// return something else).
func (t *tunnel) setKernel(up net.Conn) {
	ut, ok1 := up.(*net.TCPConn)
	ct, ok2 := t.client.(*net.TCPConn)
	if !sockio.Kernel || !ok1 || !ok2 {
		return
	}
	var err1, err2 error
	t.upRaw, err1 = ut.SyscallConn()
	t.clientRaw, err2 = ct.SyscallConn()
	t.kernel = err1 == nil && err2 == nil
}

// checkIdle runs on the idle timer. It returns how long to wait before the
// next check, or 0 to end the tunnel: it has been idle (no data either way
// on either socket) for timeouts.idle, or bytes for the client have waited
// that long without the client acknowledging any. The timer fires at least
// every quarter of timeouts.idle, so a stalled client is cut within 1.5×
// timeouts.idle of its last acknowledgement.
func (t *tunnel) checkIdle() time.Duration {
	u := t.u
	if !t.kernel {
		return u.idle - (time.Since(u.s.epoch) - time.Duration(u.last.Load()))
	}
	cs, err := sockio.TCPState(t.clientRaw)
	if err != nil {
		return 0 // the socket cannot report: it is closed or broken
	}
	us, err := sockio.TCPState(t.upRaw)
	if err != nil {
		return 0
	}
	next := u.idle - min(cs.Quiet, us.Quiet)
	if next <= 0 {
		return 0
	}
	now := time.Since(u.s.epoch)
	switch {
	case !cs.Pending:
		t.stalled = false
	case !t.stalled || cs.Acked != t.stallAcked:
		t.stalled, t.stallAcked, t.stallSince = true, cs.Acked, now
	case now-t.stallSince >= u.idle:
		return 0
	}
	return min(next, u.idle/4)
}
