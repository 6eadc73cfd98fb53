// Package dnsfilter owns egressd's allow-list DNS server: the resolver the
// agent's container points its DNS at. It answers names the policy grants,
// through the shared resolver, with addresses in private and special ranges
// removed; every other name gets NXDOMAIN without any upstream query, so an
// ungranted name carries nothing out, and neither does an exact grant (the
// only name forwarded is the one the operator wrote). A wildcard grant is
// different: with "*.zone" granted, any labels under zone are forwarded and
// reach zone's authoritative nameservers, so granting a wildcard for a zone
// the agent's adversary controls opens a DNS channel out, bounded only by
// the rate limit and dns.qtypes. Query types other than the policy's
// dns.qtypes are refused, each client is rate limited, and every query
// leaves one decision line in the decision log.
//
// Every query is a query value (query.go) that serve takes through the
// same order: decide, answer, record. TCP is served by miekg/dns through
// ServeDNS. UDP, where the agent's queries come, is read by
// internal/udpserve's readers, which hand each datagram to a udpHandler:
// plain queries are answered from their bytes, granted ones from packed
// replies kept per policy and resolver answer (replies.go), with the same
// checks, replies and log lines as ServeDNS.
package dnsfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/dnsfilter/internal/udpserve"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/ratelimit"
	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
)

// Limits of the server itself; few knobs, safe values.
const (
	// queryTimeout caps one query end to end. The resolver gives up
	// earlier (its Timeout per upstream); this is the backstop that keeps
	// a client from ever hanging.
	queryTimeout = 5 * time.Second
	// maxUDPSize is the largest UDP answer sent, whatever the client
	// advertises.
	maxUDPSize = udpserve.MaxSize
	// maxTCPConns bounds concurrent TCP connections; further ones wait in
	// the kernel backlog.
	maxTCPConns = 256
	// shutdownGrace bounds how long Serve waits for queries in progress.
	shutdownGrace = 5 * time.Second
)

// Resolver is what the server needs from the shared resolver. Exchange
// returns a message the caller owns (it is filtered in place), with Rcode
// NOERROR or NXDOMAIN; anything else is an error. *resolver.Resolver
// implements it.
type Resolver interface {
	Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
}

// Config wires a Server.
type Config struct {
	// Policy returns the current policy; it is called once per query, so
	// a reload applies to the next query. A nil func or nil policy makes
	// every query fail with SERVFAIL (closed).
	Policy func() *policy.Policy
	// Resolver answers granted names; nil makes granted queries SERVFAIL.
	Resolver Resolver
	// Recorder receives one decision entry per query (plus summaries of
	// rate-limited queries); nil discards. Counting entries by verdict and
	// reason gives the query metrics.
	Recorder declog.Recorder
	// Self lists egressd's own addresses (its listeners on the agent's
	// network); answers pointing at them are removed like private ones,
	// with reason self_address, whatever port the agent would then try
	// (safedial.SelfSet.ContainsAddr). An unspecified address stands for
	// every address of this machine. nil means none.
	Self []netip.Addr
	// Logger gets operational problems (write failures); nil means
	// slog.Default().
	Logger *slog.Logger
	// Clock is the time source for rate limits and log times; nil means
	// time.Now.
	Clock func() time.Time
}

// Server is the allow-list DNS server. Its ServeDNS is safe for concurrent
// use; Serve runs the server on sockets.
type Server struct {
	policy func() *policy.Policy
	res    Resolver
	self   *safedial.SelfSet
	rec    declog.Recorder
	log    *slog.Logger
	clock  func() time.Time

	limits   *ratelimit.Table[netip.Addr]
	limitLog limitLog
	replies  replyCache
	exp      expiringResolver                // res, when it tells expiries; else nil
	base     atomic.Pointer[context.Context] // Serve's context, for queries
	waiting  waiters                         // UDP queries waiting for the resolver
}

// New returns a server for cfg; see Config for what nil fields mean.
func New(cfg Config) *Server {
	s := &Server{
		policy: cfg.Policy,
		res:    cfg.Resolver,
		self:   safedial.NewSelfAddrs(cfg.Self),
		rec:    cfg.Recorder,
		log:    cfg.Logger,
		clock:  cfg.Clock,
		limits: ratelimit.NewTable[netip.Addr](0, 0),
	}
	if s.policy == nil {
		s.policy = func() *policy.Policy { return nil }
	}
	if s.rec == nil {
		s.rec = declog.Discard{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	s.limitLog.init()
	s.replies.init()
	s.waiting.init()
	s.exp, _ = s.res.(expiringResolver)
	return s
}

// Compile-time check: the shared resolver is what the server expects.
var _ Resolver = (*resolver.Resolver)(nil)

// Serve answers DNS on pc (UDP) and ln (TCP), either of which may be nil,
// until ctx ends or a socket fails. It closes both. On return every
// handler goroutine has finished, or shutdownGrace has passed.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if pc == nil && ln == nil {
		return errors.New("dnsfilter: no socket to serve")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.base.Store(&ctx)

	// Room for every UDP reader and the TCP server to fail at once.
	errc := make(chan error, udpserve.Readers()+1)
	var tcp *dns.Server
	var err error
	if ln != nil {
		tcp = s.newServer(func(srv *dns.Server) { srv.Listener = netutil.LimitListener(ln, maxTCPConns) })
		if err = start(tcp, errc); err != nil {
			tcp = nil
		}
	}
	var udp *udpserve.Server
	if pc != nil && err == nil {
		udp = udpserve.Serve(ctx, udpserve.Config{
			Conn:    pc,
			Handler: func() udpserve.Handler { return s.newUDPHandler() },
			Clock:   s.clock,
			Logger:  s.log,
		}, errc)
	}
	if err == nil {
		err = s.run(ctx, errc)
	}
	cancel()
	s.shutdown(udp, tcp)
	if pc != nil {
		pc.Close()
	}
	if ln != nil {
		ln.Close()
	}
	return err
}

// start runs srv and returns once it serves, or with the error it
// stopped with. Its later end is reported on errc.
func start(srv *dns.Server, errc chan error) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return fmt.Errorf("dnsfilter: serve: %w", err)
	}
}

// run waits for ctx or a socket failure, flushing rate-limit summaries as
// their windows end. Queries in progress see ctx end, so their resolution
// stops and they get SERVFAIL.
func (s *Server) run(ctx context.Context, errc <-chan error) error {
	tick := time.NewTicker(limitLogWindow)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("dnsfilter: serve: %w", err)
		case <-tick.C:
			s.flushLimitLog(false)
		}
	}
}

// shutdown stops the UDP readers and the TCP server (either may be nil)
// and waits, within shutdownGrace, for the queries they started.
func (s *Server) shutdown(udp *udpserve.Server, tcp *dns.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if tcp != nil {
		// ShutdownContext returns once every TCP handler has.
		if err := tcp.ShutdownContext(ctx); err != nil {
			s.log.Warn("dns server shutdown", "err", err)
		}
	}
	if udp != nil {
		// The readers stop first, so no query starts waiting after the
		// wait below has begun; the socket stays open for the replies.
		udp.Stop()
		s.waiting.wait(ctx)
	}
	s.flushLimitLog(true)
}

func (s *Server) newServer(set func(*dns.Server)) *dns.Server {
	srv := &dns.Server{
		Handler:        s,
		UDPSize:        maxUDPSize,
		ReadTimeout:    2 * time.Second,
		WriteTimeout:   2 * time.Second,
		MsgAcceptFunc:  acceptQuery,
		DecorateReader: s.decorateReader,
	}
	set(srv)
	return srv
}

// acceptQuery rejects, before the message is parsed, what is not a plain
// query: answers are dropped (never answer an answer), other opcodes get
// NOTIMP, anything but one question or with records a query does not carry
// gets FORMERR.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	const qrBit = 1 << 15
	switch {
	case h.Bits&qrBit != 0:
		return dns.MsgIgnore
	case int(h.Bits>>11)&0xF != dns.OpcodeQuery:
		return dns.MsgRejectNotImplemented
	case h.Qdcount != 1 || h.Ancount != 0 || h.Nscount != 0 || h.Arcount > 2:
		return dns.MsgReject
	}
	return dns.MsgAccept
}
