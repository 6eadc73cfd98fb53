package dnsfilter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/declog"
	"github.com/egressd/egressd/internal/netaddr"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/ratelimit"
)

// outcome is what one query came to: the reply's rcode and records, and
// the decision to log.
type outcome struct {
	rcode   int
	answer  *dns.Msg // filtered upstream answer; nil for replies made here
	verdict policy.Verdict
	reason  policy.Reason
	rule    *policy.Rule
	log     bool         // false only for rate-limited queries already logged this window
	folded  limitSummary // rate-limited queries of the window this one replaced, not logged
}

// ServeDNS implements dns.Handler: it answers one query and records one
// decision line. Answers to answers are dropped. It never blocks longer
// than queryTimeout.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if r == nil || r.Response {
		return
	}
	start := s.clock()
	client := netaddr.Of(w.RemoteAddr())
	p := s.policy()
	o := s.decide(p, client, r, start)
	reply := makeReply(r, o)
	size := dns.MaxMsgSize
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
		size = udpSize(r)
	}
	reply.Truncate(size)
	if err := w.WriteMsg(reply); err != nil {
		s.log.Debug("dns reply not written", "client", client, "err", err)
	}
	s.record(p, client, r, o, start)
}

// decide runs the per-query checks in their declared order: policy
// present, client rate, message shape, name granted, type answered, then
// resolution and address filtering. Denied names are never forwarded.
func (s *Server) decide(p *policy.Policy, client netip.Addr, r *dns.Msg, now time.Time) outcome {
	if p == nil {
		return outcome{rcode: dns.RcodeServerFailure, log: true}
	}
	lim := p.Config().Limits.DNS
	if ok, _ := s.limits.Allow(client, ratelimit.Limit{RPS: lim.RPS, Burst: lim.Burst}, now); !ok {
		log, folded := s.limitLog.note(client, now)
		return outcome{rcode: dns.RcodeRefused, reason: policy.ReasonRateLimited, log: log, folded: folded}
	}
	if rcode, ok := checkShape(r); !ok {
		return outcome{rcode: rcode, reason: policy.ReasonBadRequest, log: true}
	}
	q := r.Question[0]
	d := decideName(p, client, q.Name)
	if !d.Verdict.Allowed() {
		// NXDOMAIN, not REFUSED: musl stops walking its search list on
		// REFUSED, and to the agent the name simply does not exist.
		return outcome{rcode: dns.RcodeNameError, verdict: d.Verdict, reason: d.Reason, rule: d.Rule, log: true}
	}
	if !p.QTypeAllowed(q.Qtype) {
		return outcome{rcode: dns.RcodeRefused, reason: policy.ReasonQTypeNotAllowed, rule: d.Rule, log: true}
	}
	return s.resolve(p, q, d)
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
		return policy.Decision{Verdict: policy.Deny, Reason: policy.ReasonBadRequest}
	}
	return p.Decide(policy.Request{Client: client, Host: qname, Proto: policy.ProtoDNS})
}

// resolve answers a granted question through the shared resolver and
// removes what the agent must not be told.
func (s *Server) resolve(p *policy.Policy, q dns.Question, d policy.Decision) outcome {
	fail := outcome{rcode: dns.RcodeServerFailure, reason: policy.ReasonResolveFailed, rule: d.Rule, log: true}
	if s.res == nil {
		return fail
	}
	ctx, cancel := context.WithTimeout(s.baseContext(), queryTimeout)
	defer cancel()
	m, err := s.res.Exchange(ctx, q.Name, q.Qtype)
	if err != nil {
		s.log.Debug("dns upstream failed", "name", q.Name, "err", err)
		return fail
	}
	f, ok := filterAnswer(checker{p: p, self: s.self}, m, q)
	if !ok {
		return fail // CNAME loop: nothing sound to answer
	}
	if f.had > 0 && f.kept == 0 {
		return outcome{rcode: dns.RcodeNameError, reason: f.refused.Reason, rule: d.Rule, log: true}
	}
	return outcome{rcode: m.Rcode, answer: m, verdict: d.Verdict, reason: d.Reason, rule: d.Rule, log: true}
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

// record writes the query's decision line, preceded by the summary of the
// rate-limit window it replaced when that had unlogged refusals. The
// summary names no query: the refusals it counts were for any names.
func (s *Server) record(p *policy.Policy, client netip.Addr, r *dns.Msg, o outcome, start time.Time) {
	if !o.log {
		return
	}
	e := declog.Entry{
		Time:     start,
		Event:    declog.EventDecision,
		Client:   netaddr.String(client),
		Proto:    policy.ProtoDNS,
		Verdict:  o.verdict,
		Reason:   o.reason,
		Duration: s.clock().Sub(start),
	}
	if p != nil {
		e.Rule = o.rule.String() // rendered at compile time: no allocation
	}
	if len(r.Question) > 0 {
		e.Host = strings.ToLower(strings.TrimSuffix(r.Question[0].Name, "."))
		e.QType = dns.Type(r.Question[0].Qtype).String()
	}
	if o.folded.count > 0 {
		s.rec.Record(o.folded.entry(start))
	}
	s.rec.Record(e)
}
