// Package proxy owns egressd's HTTP forward proxy: CONNECT tunnels and
// absolute-URI HTTP requests (including WebSocket upgrades and streamed
// responses such as SSE). Every request and tunnel is decided by
// policy.Decide; names are resolved once by egressd's resolver, every
// address is classified with CheckAddr, and egressd dials exactly the
// address it checked. It is the only package that imports goproxy.
//
// A connection's first bytes are read by the front reader (front.go): a
// connection that opens with a plain CONNECT (httphead.ParseConnect) is
// served there, through the same steps below; every other one goes to
// net/http with what was read, and ServeHTTP runs the steps.
//
// The order of checks for every request, written down once here:
//
//  0. heads net/http itself refuses never reach the handler; egressd
//     answers and logs them as bad_request at the connection (refuse.go)
//  1. connection caps (limits.max_conns, max_conns_per_client), applied when
//     the connection is accepted: too_many_connections
//  2. Host-header bookkeeping for the request (see internal/httphead); a head
//     whose raw framing is ambiguous (bare LF or CR, obs-fold,
//     Content-Length with Transfer-Encoding, Transfer-Encoding twice) is
//     bad_request and closes the connection
//  3. client token bucket (limits.client): rate_limited
//  4. request target parsing: origin-form, userinfo, non-http scheme,
//     malformed host or port: bad_request
//  5. Host header against the request URI (plain HTTP): host_mismatch
//  6. policy.Decide on the request target (never the Host header); with
//     ask: on, an askable denial is held while a person is asked (see
//     ask.go) and decided again if they allow it
//  7. destination token bucket (rule rate:, else limits.host): rate_limited
//  8. resolution through the Resolver: resolve_failed
//  9. safedial.Check: CheckAddr on every resolved address (any denied
//     address denies the whole name), then egressd's own listeners:
//     private_address, ..., self_address
//  10. safedial.DialFirst: dial of exactly the checked addresses; for
//     tunnels to names, the first client bytes are held until their TLS
//     SNI is checked.
//
// A plain HTTP request to a destination egressd already holds a connection
// to runs steps 8 and 9 only if the upstream client dials (see Server.decide): a
// pooled connection's address was checked when it was dialed and again at
// every reload (Revoke). A refusal there is answered and logged like any
// other, after the request's allow line.
//
// In mode report, the Decide reasons policy relaxes and rate limits are
// logged as would_deny and let through; caps, address checks, malformed
// requests and SNI mismatches are always enforced.
//
// Deliberate choices:
//   - A name that resolves to any denied address is denied as a whole
//     (reason of the first denied address), not trimmed to its public half.
//   - URLs with userinfo (http://granted@evil/) and CONNECT targets with
//     '@' are bad_request (400): refused rather than guessed at.
//   - Only http:// absolute URIs are relayed; https:// goes through CONNECT
//     (egressd never originates TLS). Origin-form requests are 400.
//   - Statuses: 403 for policy denials, 429 + Retry-After for rate_limited,
//     503 + Retry-After for too_many_connections (egressd is busy, the
//     request itself is fine), 502 for resolve_failed and dial failures,
//     400 for bad_request. Every denial carries X-Egressd-Reason, the
//     reason in its status line (policy.StatusPhrase, see armRefusal) and
//     a one-line text/plain body with the policy.Hint grant.
//   - SNI: the first bytes of a tunnel to a name are held until they are
//     known not to be TLS (relayed as they are: egressd cannot inspect
//     other protocols), or a whole ClientHello whose SNI is absent (the
//     checked address serves its default) or equals the CONNECT host. A
//     malformed or incomplete-after-timeouts.header ClientHello is denied
//     (bad_request). Tunnels to IP literals (cidr grants) are not
//     SNI-checked: the grant is for the address. Encrypted Client Hello
//     shows its public name and is therefore refused unless that equals
//     the CONNECT host.
//   - Plain requests pipelined behind a CONNECT never run: a CONNECT is
//     either a tunnel or answered with Connection: close.
//   - A request body that fails to read (broken chunked framing, cut
//     short) is the client's fault: 400 bad_request with Connection: close,
//     logged as a denial after the request's allow line, never a 502.
//     Nothing after it on that connection is read.
//   - A request body may not wait longer than timeouts.idle for its next
//     bytes (nor may net/http's discard of an unread rest): a client that
//     announces a body and stops sending gets 400 bad_request instead of
//     holding a handler and an upstream connection.
//   - Every write to a client (responses and tunnels) must finish within
//     timeouts.idle, so a client that stops reading is cut rather than
//     holding a handler, an upstream connection and a slot. A tunnel
//     relayed in the kernel (splice) has no per-write deadline: it is cut
//     once bytes for its client have waited timeouts.idle without the
//     client acknowledging any (TCP_INFO, checked every quarter of
//     timeouts.idle; see tunnel.go).
//   - http.Server settings (timeouts.header, client keep-alive
//     timeouts.idle, limits.max_header_bytes) are read at New; all other
//     limits and timeouts are read from the current policy at each use.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/elazarl/goproxy"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/ratelimit"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
)

// Resolver looks names up for the proxy. egressd passes its shared
// resolver (resolver.upstreams), never the system's.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Config wires a Server. Policy and Resolver are required.
type Config struct {
	// Policy returns the current policy; reloads swap what it returns and
	// then call Revoke.
	Policy func() *policy.Policy
	// Resolver resolves names that Decide allowed.
	Resolver Resolver
	// Recorder receives the decision log. nil discards.
	Recorder declog.Recorder
	// Self lists egressd's own listener addresses, never dialed. An
	// unspecified IP (0.0.0.0, ::) means every local address on that port.
	Self []netip.AddrPort
	// Dial connects to an already-checked "ip:port". nil uses a net.Dialer
	// bounded by the policy's timeouts.dial.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives operational errors only (the Recorder is the decision
	// log). nil uses slog.Default().
	Logger *slog.Logger
	// Clock stamps log entries and drives the token buckets. nil uses
	// time.Now.
	Clock func() time.Time
	// Ask holds askable denials while a person is asked (policy ask:);
	// nil answers every denial at once.
	Ask Asker
}

// Asker puts an askable denial to a person and waits for the answer.
// Hold returns policy.ReasonNone when the request may be decided again
// (a grant now covers it), else the reason to refuse it with, a
// Retry-After (0 for none) and a sentence for the body.
type Asker interface {
	Hold(ctx context.Context, req policy.Request, d policy.Decision) (vocab.Reason, time.Duration, string)
}

// Server is the proxy. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	rec   declog.Recorder
	now   func() time.Time
	epoch time.Time // monotonic base for idle tracking

	gp  *goproxy.ProxyHttpServer
	up  *upClient // goproxy's client for plain HTTP (upstream.go)
	srv *http.Server

	clientRL *ratelimit.Table[netip.Addr]
	hostRL   *ratelimit.Table[string]
	conns    connCounter
	fronts   frontSet
	reg      registry
	self     *safedial.SelfSet
	busy     busyCounter

	// life ends when Shutdown gives up waiting: work not tied to a
	// net/http request (a CONNECT the front reader read) stops with it.
	life    context.Context
	endLife context.CancelFunc
}

// ErrConfig is wrapped by New's errors.
var ErrConfig = errors.New("proxy config")

// New builds a Server. The http.Server timeouts that cannot change while
// serving (timeouts.header, timeouts.idle for client keep-alive,
// limits.max_header_bytes) are read from the policy current at New; all
// other limits and timeouts are read from the current policy at each use.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil || cfg.Policy() == nil {
		return nil, fmt.Errorf("%w: Policy is required", ErrConfig)
	}
	if cfg.Resolver == nil {
		return nil, fmt.Errorf("%w: Resolver is required", ErrConfig)
	}
	if cfg.Dial == nil {
		cfg.Dial = upstreamDialer.DialContext
	}
	s := &Server{cfg: cfg, log: cfg.Logger, rec: cfg.Recorder, now: cfg.Clock, epoch: time.Now()}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.rec == nil {
		s.rec = declog.Discard{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.self = safedial.NewSelfSet(cfg.Self)
	s.reg.init()
	s.clientRL = ratelimit.NewTable[netip.Addr](0, 0)
	s.hostRL = ratelimit.NewTable[string](0, 0)
	c := cfg.Policy().Config()
	s.up = newUpClient(s, c.Timeouts.Idle)
	s.gp = s.newGoproxy()
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: c.Timeouts.Header,
		IdleTimeout:       c.Timeouts.Idle,
		MaxHeaderBytes:    c.Limits.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn), // accept errors, handler panics
		ConnContext:       withClientConn,
		// "OPTIONS *" comes to the handler, which refuses and logs it like
		// any request it cannot forward, instead of net/http answering 200
		// unlogged and leaving the Host-header parser a request behind.
		DisableGeneralOptionsHandler: true,
		ConnState:                    s.connState,
	}
	return s, nil
}

// Shutdown stops accepting, lets in-flight requests and open tunnels finish
// until ctx is done, then closes whatever is still open. It returns
// ctx.Err() when it had to cut connections.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.fronts.close()
	if err == nil {
		err = s.busy.wait(ctx)
	}
	if err != nil {
		s.endLife() // before closeAll: see serveTunnel
		s.reg.closeAll(vocab.ReasonNone)
		_ = s.srv.Close()
	}
	s.up.pool.closeIdle()
	return err
}

// policy returns the current policy.
func (s *Server) policy() *policy.Policy { return s.cfg.Policy() }

// busyCounter counts running handlers and open tunnels so Shutdown can wait
// for them (http.Server.Shutdown does not track hijacked connections).
type busyCounter struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0 while someone waits
}

func (b *busyCounter) add(d int) {
	b.mu.Lock()
	b.n += d
	if b.n == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
	b.mu.Unlock()
}

func (b *busyCounter) wait(ctx context.Context) error {
	b.mu.Lock()
	if b.n == 0 {
		b.mu.Unlock()
		return nil
	}
	if b.idle == nil {
		b.idle = make(chan struct{})
	}
	ch := b.idle
	b.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
