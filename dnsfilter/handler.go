package dnsfilter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/ratelimit"
	"github.com/egressd/egressd/policy"
)

// outcome is what one query came to: the reply's rcode and records, and
// the decision to log.
type outcome struct {
	rcode   int
	answer  *dns.Msg // filtered upstream answer; nil for replies made here
	verdict vocab.Verdict
	reason  vocab.Reason
	rule    *policy.Rule
	log     bool         // false only for rate-limited queries already logged this window
	folded  limitSummary // rate-limited queries of the window this one replaced, not logged
	// For outcomes of a resolver answer: when its cache entry expires and
	// the resolver generation read before asking (see keep). A zero until
	// means the reply must not be kept.
	until time.Time
	gen   uint64
}

// ServeDNS implements dns.Handler: it answers one query and records one
// decision line. Answers to answers are dropped. It never blocks longer
// than queryTimeout.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if r == nil || r.Response {
		return
	}
	q := newMsgQuery(s.policy(), netaddr.Of(w.RemoteAddr()), r, s.clock())
	s.serve(q, &msgAnswer{s: s, w: w})
}

// msgAnswer answers with a dns.Msg written to w. The resolver is asked
// inline (miekg gives each TCP connection its goroutine) unless later is
// set: a UDP datagram the fast path does not read waits on a goroutine of
// its own, so the reader goes on reading.
type msgAnswer struct {
	s     *Server
	w     dns.ResponseWriter
	later func(*query) bool
}

func (a *msgAnswer) short(q *query)     { a.s.reply(a.w, q) }
func (a *msgAnswer) cached(*query) bool { return false }
func (a *msgAnswer) record(q *query)    { a.s.record(q) }

func (a *msgAnswer) resolve(q *query) bool {
	if a.later != nil {
		return a.later(q)
	}
	a.s.finish(a.w, q)
	return true
}

// finish answers a granted query through the resolver and records it.
func (s *Server) finish(w dns.ResponseWriter, q *query) {
	q.o = s.resolve(q.p, q.msg.Question[0], q.d)
	s.reply(w, q)
	s.record(q)
}

// reply writes the reply to q.msg for q.o. A UDP reply that came from the
// resolver is kept for the fast path too.
func (s *Server) reply(w dns.ResponseWriter, q *query) {
	reply := makeReply(q.msg, q.o)
	size := dns.MaxMsgSize
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if !tcp {
		size = udpSize(q.msg)
	}
	reply.Truncate(size)
	var err error
	if !tcp && !q.o.until.IsZero() {
		var b []byte
		if b, err = reply.Pack(); err == nil {
			s.keep(q.p, q.msg, reply, b, q.o)
			_, err = w.Write(b)
		}
	} else {
		err = w.WriteMsg(reply)
	}
	if err != nil {
		s.log.Debug("dns reply not written", "client", q.client, "err", err)
	}
}

// admit charges the client's DNS rate limit; a refusal is REFUSED.
func (s *Server) admit(p *policy.Policy, client netip.Addr, now time.Time) (outcome, bool) {
	lim := p.Config().Limits.DNS
	if ok, _ := s.limits.Allow(client, ratelimit.Limit{RPS: lim.RPS, Burst: lim.Burst}, now); !ok {
		log, folded := s.limitLog.note(client, now)
		return outcome{rcode: dns.RcodeRefused, reason: vocab.ReasonRateLimited, log: log, folded: folded}, false
	}
	return outcome{}, true
}

// checkShape accepts one IN-class question in a plain query with EDNS
// version 0 or none; otherwise it returns the rcode to answer with.
func checkShape(r *dns.Msg) (int, bool) {
	switch {
	case r.Opcode != dns.OpcodeQuery:
		return dns.RcodeNotImplemented, false
	case len(r.Question) != 1:
		return dns.RcodeFormatError, false
	case r.Question[0].Qclass != dns.ClassINET:
		return dns.RcodeRefused, false
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers, false
	}
	return dns.RcodeSuccess, true
}

// decideName asks the policy about qname. Names with escaped bytes
// (`\.`, `\000`) are refused outright: their text and wire forms disagree
// about where labels end, and no host an agent needs has one.
func decideName(p *policy.Policy, client netip.Addr, qname string) policy.Decision {
	if strings.IndexByte(qname, '\\') >= 0 {
		return policy.Decision{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest}
	}
	return p.Decide(policy.Request{Client: client, Host: qname, Proto: vocab.ProtoDNS})
}

// resolve answers a granted question through the shared resolver and
// removes what the agent must not be told.
func (s *Server) resolve(p *policy.Policy, q dns.Question, d policy.Decision) outcome {
	fail := outcome{rcode: dns.RcodeServerFailure, reason: vocab.ReasonResolveFailed, rule: d.Rule, log: true}
	if s.res == nil {
		return fail
	}
	ctx, cancel := context.WithTimeout(s.baseContext(), queryTimeout)
	defer cancel()
	m, until, gen, err := s.exchange(ctx, q)
	if err != nil {
		s.log.Debug("dns upstream failed", "name", q.Name, "err", err)
		return fail
	}
	f, ok := filterAnswer(checker{p: p, self: s.self}, m, q)
	if !ok {
		return fail // CNAME loop: nothing sound to answer
	}
	if f.had > 0 && f.kept == 0 {
		return outcome{rcode: dns.RcodeNameError, reason: f.refused.Reason, rule: d.Rule, log: true, until: until, gen: gen}
	}
	return outcome{rcode: m.Rcode, answer: m, verdict: d.Verdict, reason: d.Reason, rule: d.Rule, log: true, until: until, gen: gen}
}

// exchange asks the resolver, with the answer's expiry and the resolver
// generation read before asking when the resolver tells them (a zero
// until otherwise, and the reply is then not kept).
func (s *Server) exchange(ctx context.Context, q dns.Question) (*dns.Msg, time.Time, uint64, error) {
	if s.exp == nil {
		m, err := s.res.Exchange(ctx, q.Name, q.Qtype)
		return m, time.Time{}, 0, err
	}
	gen := s.exp.Generation()
	m, until, err := s.exp.ExchangeUntil(ctx, q.Name, q.Qtype)
	return m, until, gen, err
}

func (s *Server) baseContext() context.Context {
	if ctx := s.base.Load(); ctx != nil {
		return *ctx
	}
	return context.Background()
}

// makeReply builds the answer to r: its ID, RD and CD bits and question as
// sent (so 0x20 case randomisation survives), RA set, and an OPT record
// when the client sent one.
func makeReply(r *dns.Msg, o outcome) *dns.Msg {
	reply := new(dns.Msg)
	reply.SetReply(r)
	reply.RecursionAvailable = true
	reply.Rcode = o.rcode
	if o.answer != nil {
		reply.Answer, reply.Ns = o.answer.Answer, o.answer.Ns
	}
	if r.IsEdns0() != nil {
		reply.SetEdns0(maxUDPSize, false)
	}
	return reply
}

// udpSize is the largest UDP reply r's sender accepts, as far as we send.
func udpSize(r *dns.Msg) int {
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	return min(max(size, dns.MinMsgSize), maxUDPSize)
}

// record writes q's decision line at once, preceded by the summary of the
// rate-limit window it replaced when that had unlogged refusals. The
// summary names no query: the refusals it counts were for any names.
func (s *Server) record(q *query) {
	if !q.o.log {
		return
	}
	e := decisionEntry(q.p, netaddr.String(q.client), q.host, qtypeName(q), q.o, q.start)
	e.Duration = s.clock().Sub(q.start)
	s.emit(e, q.o.folded)
}

// qtypeName is the query type as logged; none for a message without a
// question.
func qtypeName(q *query) string {
	if q.msg != nil && len(q.msg.Question) == 0 {
		return ""
	}
	return dns.Type(q.qtype).String()
}

// decisionEntry is the one place a DNS decision line is built, for the
// full path and the fast path alike; the caller sets Duration.
func decisionEntry(p *policy.Policy, client, host, qtype string, o outcome, start time.Time) declog.Entry {
	e := declog.Entry{
		Time:    start,
		Event:   vocab.EventDecision,
		Client:  client,
		Proto:   vocab.ProtoDNS,
		Host:    host,
		QType:   qtype,
		Verdict: o.verdict,
		Reason:  o.reason,
	}
	if p != nil {
		e.Rule = o.rule.String() // rendered at compile time: no allocation
	}
	return e
}

// emit records e, preceded by the summary of the rate-limit window it
// replaced when that had unlogged refusals.
func (s *Server) emit(e declog.Entry, folded limitSummary) {
	if folded.count > 0 {
		s.rec.Record(folded.entry(e.Time))
	}
	s.rec.Record(e)
}
