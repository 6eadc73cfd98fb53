package proxy

import (
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/bufpool"
	"github.com/egressd/egressd/proxy/internal/sni"

	"github.com/egressd/egressd/policy"
)

// maxHelloWrites bounds how many pieces a ClientHello may arrive in before
// egressd gives up on it: real clients send it in one to three segments,
// and every piece re-parses the buffer.
const maxHelloWrites = 64

var (
	errDenied  = errors.New("connection denied by egressd")
	errClosed  = errors.New("connection closed by egressd")
	errRevoked = errors.New("grant revoked while dialing")
)

// upConn is a connection egressd dialed: the far end of a CONNECT tunnel
// or a pooled plain-HTTP upstream connection. It counts bytes, closes itself
// after timeouts.idle without a byte in either direction, is registered by
// destination for Revoke and Shutdown, and for tunnels to names withholds
// the client's first bytes until their TLS SNI is checked. A tunnel's
// upConn also owns the client end (tun): ending it closes both.
type upConn struct {
	net.Conn
	s    *Server
	rq   *request // the request that dialed it; only its immutable fields are read
	key  destKey
	addr netip.AddrPort
	tun  *tunnel                       // the client end; nil for HTTP upstream connections
	hc   *hconn                        // the HTTP client's state for it; set once under mu (attach)
	pol  atomic.Pointer[policy.Policy] // policy it was last checked against

	up, down atomic.Int64
	last     atomic.Int64 // time.Since(s.epoch) at the last byte (HTTP, and tunnels without kernel counters)
	idle     time.Duration
	timer    *time.Timer

	// First-flight inspection, touched only by the client→upstream relay
	// (Write) and, for inspecting, by the header-timeout timer.
	inspecting  atomic.Bool
	hello       []byte
	helloWrites int
	helloTimer  *time.Timer

	// mu orders end: whoever ends the connection records its denial before
	// anyone can read reason (a tunnel's close entry follows its denial).
	mu     sync.Mutex
	ending atomic.Bool
	reason vocab.Reason // why it was ended; guarded by mu
}

// upstreamDialer dials the checked addresses when Config.Dial is nil. TCP
// keep-alive is off: timeouts.idle already ends a silent connection
// (checkIdle), and keep-alive's four setsockopt calls per dial were a
// measurable share of a short tunnel's cost.
var upstreamDialer = net.Dialer{KeepAlive: -1}

// destKey groups connections by the destination Revoke re-decides.
type destKey struct {
	host  string
	port  uint16
	proto vocab.Proto
}

// newUpConn wraps a freshly dialed plain-HTTP upstream connection and
// registers it; nil if a policy swap since the decision revoked it.
func (s *Server) newUpConn(c net.Conn, ap netip.AddrPort, rq *request) *upConn {
	u := &upConn{Conn: c, s: s, rq: rq, addr: ap, idle: rq.pol.Config().Timeouts.Idle}
	s.track(u)
	if s.revokedSince(u) {
		u.end(vocab.ReasonRevoked)
		return nil
	}
	return u
}

// track arms u's idle timer and adds it to the registry.
func (s *Server) track(u *upConn) {
	u.key = destKey{host: u.rq.host, port: u.rq.port, proto: u.rq.proto}
	u.pol.Store(u.rq.pol)
	u.touch()
	if u.idle > 0 {
		// Armed only after u.timer is set: checkIdle reads it.
		u.timer = time.AfterFunc(time.Duration(math.MaxInt64), u.checkIdle)
		u.timer.Reset(u.idle)
	}
	s.reg.add(u)
}

// revokedSince re-decides a just-registered connection if the policy was
// swapped since its decision: Revoke may have run while it was dialed, and
// checking after track means it can never be missed. The caller ends it
// (reason revoked) when this says so.
func (s *Server) revokedSince(u *upConn) bool {
	p := s.policy()
	return p != u.rq.pol && !s.stillAllowed(p, p.DecideOpen(u.rq.policyRequest()), u)
}

func (u *upConn) touch() { u.last.Store(int64(time.Since(u.s.epoch))) }

func (u *upConn) Read(p []byte) (int, error) {
	n, err := u.Conn.Read(p)
	if n > 0 {
		u.down.Add(int64(n))
		u.touch()
	}
	return n, err
}

func (u *upConn) Write(p []byte) (int, error) {
	if u.inspecting.Load() {
		return u.inspectWrite(p)
	}
	n, err := u.Conn.Write(p)
	u.up.Add(int64(n))
	u.touch()
	return n, err
}

// inspectWrite buffers the client's first bytes until they are either not
// TLS (relayed as they are) or a whole ClientHello whose SNI is absent or
// names the CONNECT host. A malformed or too slow ClientHello is denied:
// a server might read a name from what egressd could not.
func (u *upConn) inspectWrite(p []byte) (int, error) {
	u.helloWrites++
	u.touch()
	// A ClientHello usually comes whole in one piece: parse it in place and
	// copy only what has to wait for more.
	data := p
	if len(u.hello) > 0 {
		u.hello = append(u.hello, p...)
		data = u.hello
	}
	name, complete, err := sni.Parse(data)
	switch {
	case errors.Is(err, sni.ErrNotTLS):
	case err != nil:
		return 0, u.deny(vocab.ReasonBadRequest)
	case !complete:
		if u.helloWrites >= maxHelloWrites || len(data) > 2*sni.MaxHelloLen {
			return 0, u.deny(vocab.ReasonBadRequest)
		}
		if len(u.hello) == 0 {
			u.hello = append(make([]byte, 0, 2*len(p)), p...)
		}
		if u.helloTimer == nil {
			u.helloTimer = time.AfterFunc(headerTimeout(u.rq.pol), u.helloExpired)
		}
		return len(p), nil
	case !sniMatches(name, u.rq.host):
		return 0, u.deny(vocab.ReasonSNIMismatch)
	}
	u.inspecting.Store(false)
	if u.helloTimer != nil {
		u.helloTimer.Stop()
	}
	u.hello = nil
	n, err := u.Conn.Write(data)
	u.up.Add(int64(n))
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// sniMatches compares a ClientHello server name with the CONNECT host. No
// SNI at all is allowed: the server then picks its default certificate and
// the address was checked anyway.
func sniMatches(sni, host string) bool {
	if sni == "" {
		return true
	}
	name, ip, err := policy.NormalizeHost(sni)
	return err == nil && !ip.IsValid() && name == host
}

func (u *upConn) helloExpired() {
	if u.inspecting.Load() {
		u.deny(vocab.ReasonBadRequest)
	}
}

func (u *upConn) checkIdle() {
	if u.ending.Load() {
		return
	}
	var next time.Duration
	if u.tun != nil {
		next = u.tun.checkIdle()
	} else {
		next = u.idle - u.quiet()
	}
	if next <= 0 {
		u.end(vocab.ReasonNone)
		return
	}
	u.timer.Reset(next)
}

// deny ends the connection with a logged denial.
func (u *upConn) deny(reason vocab.Reason) error {
	u.end(reason)
	return errDenied
}

// Close implements net.Conn.
func (u *upConn) Close() error {
	if !u.end(vocab.ReasonNone) {
		return errClosed
	}
	return nil
}

// end closes the connection once: a denial reason (revoked, sni_mismatch,
// ...) is logged as a decision first. A tunnel's close entry follows when
// its relay has stopped (tunnel.finish), with the final byte counts.
func (u *upConn) end(reason vocab.Reason) bool {
	u.mu.Lock()
	if u.ending.Load() {
		u.mu.Unlock()
		return false
	}
	u.ending.Store(true)
	u.reason = reason
	if reason != vocab.ReasonNone {
		u.s.recordLateDenial(u.rq, reason, 0)
	}
	hc := u.hc
	u.mu.Unlock()
	_ = u.Conn.Close()
	if hc != nil {
		hc.pool.forget(hc)
	}
	if u.tun != nil {
		u.tun.closeClient()
	}
	if u.timer != nil {
		u.timer.Stop()
	}
	u.s.reg.remove(u)
	return true
}

// attach ties the HTTP client's state to u, so that ending u drops it from
// the pool; false if u has already ended.
func (u *upConn) attach(hc *hconn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ending.Load() {
		return false
	}
	u.hc = hc
	return true
}

// quiet is how long no byte has crossed u.
func (u *upConn) quiet() time.Duration {
	return time.Since(u.s.epoch) - time.Duration(u.last.Load())
}

// endReason is why the connection was ended (ReasonNone if by a close).
func (u *upConn) endReason() vocab.Reason {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reason
}

// WriteTo lets an io.Copy from u use a pooled buffer.
func (u *upConn) WriteTo(w io.Writer) (int64, error) { return bufpool.Copy(w, u) }

// CloseWrite half-closes the upstream when the client finished sending.
func (u *upConn) CloseWrite() error { return closeWrite(u.Conn) }

// CloseRead half-closes the read side.
func (u *upConn) CloseRead() error { return closeRead(u.Conn) }

// registry holds every open upConn by destination.
type registry struct {
	mu sync.Mutex
	m  map[destKey]map[*upConn]struct{}
}

func (r *registry) init() { r.m = make(map[destKey]map[*upConn]struct{}) }

func (r *registry) add(u *upConn) {
	r.mu.Lock()
	set := r.m[u.key]
	if set == nil {
		set = make(map[*upConn]struct{})
		r.m[u.key] = set
	}
	set[u] = struct{}{}
	r.mu.Unlock()
}

func (r *registry) remove(u *upConn) {
	r.mu.Lock()
	if set := r.m[u.key]; set != nil {
		delete(set, u)
		if len(set) == 0 {
			delete(r.m, u.key)
		}
	}
	r.mu.Unlock()
}

// snapshot returns the connections for which keep says false.
func (r *registry) collect(keep func(destKey, *upConn) bool) []*upConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*upConn
	for k, set := range r.m {
		for u := range set {
			if !keep(k, u) {
				out = append(out, u)
			}
		}
	}
	return out
}

func (r *registry) closeAll(reason vocab.Reason) {
	for _, u := range r.collect(func(destKey, *upConn) bool { return false }) {
		u.end(reason)
	}
}

// Len is the number of open upstream connections (tunnels and pooled HTTP
// connections).
func (s *Server) Len() int {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	n := 0
	for _, set := range s.reg.m {
		n += len(set)
	}
	return n
}

// Revoke re-decides every open tunnel and upstream connection against the
// current policy and closes those it now denies (logged with reason
// revoked); the rest are untouched. Call it after every policy swap.
func (s *Server) Revoke() {
	p := s.policy()
	decided := make(map[destKey]policy.Decision)
	victims := s.reg.collect(func(k destKey, u *upConn) bool {
		d, ok := decided[k]
		if !ok {
			d = p.DecideOpen(u.rq.policyRequest()) // an "allow once" keeps what it let through
			decided[k] = d
		}
		if !s.stillAllowed(p, d, u) {
			return false
		}
		u.pol.Store(p)
		return true
	})
	for _, u := range victims {
		u.end(vocab.ReasonRevoked)
	}
}

// stillAllowed re-checks an open connection: its destination's decision,
// the address it is connected to, and egressd's own listeners.
func (s *Server) stillAllowed(p *policy.Policy, d policy.Decision, u *upConn) bool {
	return d.Verdict.Allowed() && p.CheckAddr(u.addr.Addr()).Verdict.Allowed() && !s.self.Contains(u.addr)
}
