package dnsfilter

import (
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// query is one question on its way through the server: who asked, under
// which policy, what was decided, and the answer. Every path — TCP, a UDP
// datagram the fast path reads, one it does not — carries one of these
// through serve.
type query struct {
	p      *policy.Policy
	client netip.Addr
	start  time.Time
	// msg is the message as miekg unpacked it; nil on the fast path, which
	// reads the bytes and has already checked the message's shape.
	msg   *dns.Msg
	name  string // the question's name as asked, for the policy
	host  string // the name as logged: lower case, no trailing dot
	qtype uint16
	o     outcome
	d     policy.Decision
}

// newMsgQuery is the query of a message miekg unpacked.
func newMsgQuery(p *policy.Policy, client netip.Addr, m *dns.Msg, start time.Time) *query {
	q := &query{p: p, client: client, start: start, msg: m}
	if len(m.Question) > 0 {
		q.name, q.qtype = m.Question[0].Name, m.Question[0].Qtype
		q.host = strings.ToLower(strings.TrimSuffix(q.name, "."))
	}
	return q
}

// answerer is how a query's reply leaves and its line is written: built as
// a dns.Msg (TCP, and datagrams the fast path does not read), or from
// bytes and the reply cache (the fast path).
type answerer interface {
	// short answers with q.o.rcode and no records.
	short(q *query)
	// cached answers a granted query from the reply cache, setting q.o, and
	// reports whether it could.
	cached(q *query) bool
	// resolve answers a granted query through the resolver and records it,
	// now or on a goroutine of its own; false when no more queries may
	// wait for the resolver.
	resolve(q *query) bool
	// record writes q's decision line.
	record(q *query)
}

// serve runs one query in the declared order: the checks of decide (policy
// present, client rate, message shape, name granted, type answered), then
// the answer — a short one, from the reply cache, or through the resolver —
// and one decision line. Denied names are never forwarded.
func (s *Server) serve(q *query, a answerer) {
	switch {
	case !s.decide(q):
		a.short(q)
	case a.cached(q):
	case a.resolve(q):
		return
	default:
		// Too many queries wait for the resolver: what resolve answers
		// when the resolver itself is too busy.
		q.o = outcome{rcode: dns.RcodeServerFailure, reason: vocab.ReasonResolveFailed, rule: q.d.Rule, log: true}
		a.short(q)
	}
	a.record(q)
}

// decide sets q.o for a query answered without the resolver and returns
// false, or returns true with q.d the grant.
func (s *Server) decide(q *query) bool {
	if q.p == nil {
		q.o = outcome{rcode: dns.RcodeServerFailure, log: true}
		return false
	}
	if o, ok := s.admit(q.p, q.client, q.start); !ok {
		q.o = o
		return false
	}
	if q.msg != nil {
		if rcode, ok := checkShape(q.msg); !ok {
			q.o = outcome{rcode: rcode, reason: vocab.ReasonBadRequest, log: true}
			return false
		}
	}
	q.d = decideName(q.p, q.client, q.name)
	if !q.d.Verdict.Allowed() {
		// NXDOMAIN, not REFUSED: musl stops walking its search list on
		// REFUSED, and to the agent the name simply does not exist.
		q.o = outcome{rcode: dns.RcodeNameError, verdict: q.d.Verdict, reason: q.d.Reason, rule: q.d.Rule, log: true}
		return false
	}
	if !q.p.QTypeAllowed(q.qtype) {
		q.o = outcome{rcode: dns.RcodeRefused, reason: vocab.ReasonQTypeNotAllowed, rule: q.d.Rule, log: true}
		return false
	}
	return true
}
