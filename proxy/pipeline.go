package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/ratelimit"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
)

// request is one proxied request or tunnel, from its decision to its
// close entry. Fields up to pol are set before the pipeline runs and never
// change afterwards, so upConn and Revoke may read them from any goroutine;
// the one exception is ask, which replaces pol after a person allowed a
// held request, before any connection for it exists.
type request struct {
	start  time.Time
	client netip.Addr
	cname  string      // client's log spelling (netaddr.String), made once per connection
	cc     *clientConn // nil for a request served without egressd's listener
	proto  vocab.Proto
	method string
	host   string     // normalised name or IP literal; "" when unparseable
	ip     netip.Addr // valid when the target is an IP literal
	port   uint16
	pol    *policy.Policy

	d          policy.Decision
	targets    []netip.AddrPort // checked dial candidates, in order (safedial.Check)
	reportRate bool             // report mode let an over-limit client through
	status     int
	body       *countingBody // the client's request body, nil without one
	badBody    bool          // the body failed and egressd answered 400 (filterResponse)
}

// denial is why the pipeline stopped a request; the zero value means go on.
type denial struct {
	reason vocab.Reason
	retry  time.Duration // Retry-After for rate_limited
	detail string        // extra words for bad_request bodies
}

func (d denial) denied() bool { return d.reason != vocab.ReasonNone }

type requestKey struct{}

func withRequest(ctx context.Context, rq *request) context.Context {
	return context.WithValue(ctx, requestKey{}, rq)
}

func requestFrom(ctx context.Context) *request {
	rq, _ := ctx.Value(requestKey{}).(*request)
	return rq
}

// targetString is host:port as it appears in bodies and log messages.
func (rq *request) targetString() string {
	if rq.host == "" {
		return "request"
	}
	return net.JoinHostPort(rq.host, strconv.Itoa(int(rq.port)))
}

func (rq *request) policyRequest() policy.Request {
	return policy.Request{Client: rq.client, Host: rq.host, Port: rq.port, Proto: rq.proto}
}

// setTarget normalises host (any IP spelling, IDN, case, trailing dot) and
// port into rq.
func (rq *request) setTarget(host, port string) denial {
	name, ip, err := policy.NormalizeHost(host)
	if err != nil {
		return denial{reason: vocab.ReasonBadRequest, detail: "malformed host"}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return denial{reason: vocab.ReasonBadRequest, detail: "malformed port"}
	}
	rq.host, rq.ip, rq.port = name, ip, uint16(p)
	if ip.IsValid() {
		rq.host = ip.String()
	}
	return denial{}
}

// limitClient is step 3: the client's token bucket.
func (s *Server) limitClient(rq *request) denial {
	c := rq.pol.Config()
	ok, retry := s.clientRL.Allow(rq.client, limitOf(c.Limits.Client), rq.start)
	if ok {
		return denial{}
	}
	if rq.pol.ReportMode() {
		rq.reportRate = true
		return denial{}
	}
	return denial{reason: vocab.ReasonRateLimited, retry: retry}
}

// decide runs steps 6–9 on a parsed target: Decide, the destination
// bucket, resolution and the address checks. On success rq.d is the
// verdict to log and rq.targets the addresses the dial may use.
//
// A plain HTTP request to a destination egressd already holds a connection
// to (in use, or idle in the upstream client's pool) skips steps 8 and 9
// here: the client most likely reuses that connection, whose address was
// checked when it was dialed and is re-checked on every policy swap
// (Revoke), and the pool is keyed by the canonical host and port, so no
// other destination's connection can serve it. rq.targets stays nil and
// dialHTTP resolves and checks if the client dials after all.
func (s *Server) decide(ctx context.Context, rq *request) denial {
	rq.d = rq.pol.Decide(rq.policyRequest())
	if !rq.d.Verdict.Allowed() {
		if dn := s.ask(ctx, rq); dn.denied() {
			return dn
		}
	}
	if dn := s.limitHost(rq); dn.denied() {
		return dn
	}
	if rq.proto != vocab.ProtoHTTP || !s.reg.holds(rq.destKey()) {
		targets, dn := s.checkedTargets(ctx, rq)
		if dn.denied() {
			return dn
		}
		rq.targets = targets
	}
	if rq.reportRate && rq.d.Verdict == vocab.Allow {
		rq.d.Verdict, rq.d.Reason = vocab.Report, vocab.ReasonRateLimited
	}
	return denial{}
}

// checkedTargets runs steps 8 and 9: resolution, then every address is
// checked, and one bad address denies the name (see safedial.Check).
func (s *Server) checkedTargets(ctx context.Context, rq *request) ([]netip.AddrPort, denial) {
	addrs, dn := s.resolve(ctx, rq)
	if dn.denied() {
		return nil, dn
	}
	targets, err := safedial.Check(rq.pol, s.self, addrs, rq.port)
	if err != nil {
		return nil, denial{reason: deniedReason(err)}
	}
	return targets, denial{}
}

// destKey is the destination the request's connections are registered
// under.
func (rq *request) destKey() destKey {
	return destKey{host: rq.host, port: rq.port, proto: rq.proto}
}

// holds reports whether an upstream connection to k is open.
func (r *registry) holds(k destKey) bool {
	r.mu.Lock()
	_, ok := r.m[k]
	r.mu.Unlock()
	return ok
}

// limitHost is step 7: the destination's bucket, keyed by normalised host.
func (s *Server) limitHost(rq *request) denial {
	lim := limitOf(rq.pol.Config().Limits.Host)
	if rq.d.Rule != nil && rq.d.Rule.Rate != nil {
		lim = limitOf(*rq.d.Rule.Rate)
	}
	ok, retry := s.hostRL.Allow(rq.host, lim, rq.start)
	switch {
	case ok:
		return denial{}
	case rq.pol.ReportMode():
		if rq.d.Verdict == vocab.Allow {
			rq.d.Verdict, rq.d.Reason = vocab.Report, vocab.ReasonRateLimited
		}
		return denial{}
	}
	return denial{reason: vocab.ReasonRateLimited, retry: retry}
}

// resolve is step 8. IP literals are their own answer; names go to the
// configured resolver only, bounded by timeouts.dial.
func (s *Server) resolve(ctx context.Context, rq *request) ([]netip.Addr, denial) {
	if rq.ip.IsValid() {
		return []netip.Addr{rq.ip}, denial{}
	}
	addrs, err := s.lookup(ctx, rq)
	if err != nil || len(addrs) == 0 {
		return nil, denial{reason: vocab.ReasonResolveFailed}
	}
	return addrs, denial{}
}

// cachedLookup is a Resolver that can answer from its cache without
// waiting, as egressd's does: such an answer needs no deadline, whose
// context and timer were a measurable part of a new tunnel's cost.
type cachedLookup interface {
	LookupCached(host string) (addrs []netip.Addr, ok bool, err error)
}

// lookup resolves rq.host, from the cache when it can, else within
// timeouts.dial.
func (s *Server) lookup(ctx context.Context, rq *request) ([]netip.Addr, error) {
	if cl, ok := s.cfg.Resolver.(cachedLookup); ok {
		if addrs, ok, err := cl.LookupCached(rq.host); ok {
			return addrs, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, safedial.DialTimeout(rq.pol))
	defer cancel()
	return s.cfg.Resolver.LookupNetIP(ctx, rq.host)
}

// deniedReason is the reason of safedial.Check's refusal. Check only
// returns *safedial.DeniedError; anything else is refused as a bad request
// rather than trusted.
func deniedReason(err error) vocab.Reason {
	if de, ok := err.(*safedial.DeniedError); ok && de.Reason != vocab.ReasonNone {
		return de.Reason
	}
	return vocab.ReasonBadRequest
}

// dialChecked is step 10: safedial.DialFirst over the checked targets,
// all within timeouts.dial. Nothing here resolves a name.
func (s *Server) dialChecked(ctx context.Context, rq *request) (net.Conn, netip.AddrPort, error) {
	return safedial.DialFirst(ctx, s.cfg.Dial, "tcp", rq.targets, safedial.DialTimeout(rq.pol))
}

// dialDenied is dialHTTP's refusal when the resolution it ran for a
// deferred check (see decide) fails step 8 or 9.
type dialDenied struct{ reason vocab.Reason }

func (e *dialDenied) Error() string { return "denied: " + e.reason.String() }

// clientName is the client's log spelling.
func (rq *request) clientName() string {
	if rq.cname == "" {
		return netaddr.String(rq.client)
	}
	return rq.cname
}

func (s *Server) recordDecision(rq *request) {
	e := declog.Entry{
		Time:    rq.start,
		Event:   vocab.EventDecision,
		Client:  rq.clientName(),
		Proto:   rq.proto,
		Host:    rq.host,
		Port:    rq.port,
		Method:  rq.method,
		Verdict: rq.d.Verdict,
		Reason:  rq.d.Reason,
		Status:  rq.status,
	}
	e.Rule = rq.d.Rule.String() // rendered at compile time: no allocation
	if rq.d.Verdict != vocab.Allow {
		e.Hint = rq.hint()
	}
	s.rec.Record(e)
}

// recordLateDenial logs a denial found after rq was allowed and logged
// (an SNI mismatch, a revoked grant, a broken request body): a second
// decision line for the same request, stamped now.
func (s *Server) recordLateDenial(rq *request, reason vocab.Reason, status int) {
	d := *rq
	d.start = s.now()
	d.d = policy.Decision{Verdict: vocab.Deny, Reason: reason, Rule: rq.d.Rule}
	d.status = status
	s.recordDecision(&d)
}

// recordClose logs the end of a request or tunnel.
func (s *Server) recordClose(rq *request, reason vocab.Reason, status int, up, down int64) {
	now := s.now()
	s.rec.Record(declog.Entry{
		Time:     now,
		Event:    vocab.EventClose,
		Client:   rq.clientName(),
		Proto:    rq.proto,
		Host:     rq.host,
		Port:     rq.port,
		Method:   rq.method,
		Verdict:  rq.d.Verdict,
		Reason:   reason,
		Status:   status,
		BytesUp:  up,
		BytesDn:  down,
		Duration: now.Sub(rq.start),
	})
}

func limitOf(r policy.RateConfig) ratelimit.Limit {
	return ratelimit.Limit{RPS: r.RPS, Burst: r.Burst}
}

// Fallbacks for a policy whose timeouts were left zero; a compiled policy
// fills its own defaults, these only keep a zero from meaning "forever".
const (
	defaultHeaderTimeout = 10 * time.Second
	defaultIdleTimeout   = 5 * time.Minute
)

func headerTimeout(p *policy.Policy) time.Duration {
	if d := p.Config().Timeouts.Header; d > 0 {
		return d
	}
	return defaultHeaderTimeout
}

func idleTimeout(p *policy.Policy) time.Duration {
	if d := p.Config().Timeouts.Idle; d > 0 {
		return d
	}
	return defaultIdleTimeout
}

// headLimit is how many bytes net/http reads for one request head
// (MaxHeaderBytes plus its 4 KiB allowance for the request line).
func (s *Server) headLimit() int {
	n := s.srv.MaxHeaderBytes
	if n <= 0 {
		n = http.DefaultMaxHeaderBytes
	}
	return n + 4096
}
