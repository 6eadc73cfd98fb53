package dnsfilter

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/netaddr"
	"github.com/egressd/egressd/policy"
)

// handle answers one datagram. A plain query (parseQuery) runs the same
// checks as ServeDNS, in the same order, on the bytes: the rate limit,
// the name, the type; a granted one is answered from the reply cache when
// it holds a reply for this policy that has not expired. Any other
// datagram, and a granted query the cache cannot answer, goes the full
// way. Either way the decision line is the one ServeDNS would write.
func (r *udpReader) handle(pkt []byte, from net.Addr, start time.Time) {
	s, q := r.u.s, &r.q
	if !parseQuery(pkt, q) {
		r.full(pkt, from, start)
		return
	}
	p := s.policy()
	if p == nil {
		r.full(pkt, from, start)
		return
	}
	client := netaddr.Of(from)
	kept := s.replies.get(q.key)
	var host string
	if kept != nil {
		host = kept.host // spares building the string
	} else {
		host = string(q.host())
	}
	o, ok := s.admit(p, client, start)
	var d policy.Decision
	ask := false
	if ok {
		o, d, ask = decideQuestion(p, client, host, q.qtype)
	}
	switch {
	case !ask:
		r.commit(from, appendShortReply(r.reply(), q, o.rcode))
	case kept != nil && kept.valid(p, s.generation(), q.size, start):
		o = outcome{verdict: kept.verdict, reason: kept.reason, rule: kept.rule, log: true}
		r.commit(from, kept.appendTo(r.reply(), q, start))
	case r.wait():
		r.later(nil, pkt, from, p, client, d, start)
		return
	default:
		o = busy(d)
		r.commit(from, appendShortReply(r.reply(), q, o.rcode))
	}
	if o.log {
		e := decisionEntry(p, r.clientName(client), host, dns.Type(q.qtype).String(), o, start)
		r.logs = append(r.logs, pendingLog{e: e, folded: o.folded})
	}
}

// busy is the outcome when too many queries wait for the resolver: what
// resolve answers when the resolver itself is too busy.
func busy(d policy.Decision) outcome {
	return outcome{rcode: dns.RcodeServerFailure, reason: policy.ReasonResolveFailed, rule: d.Rule, log: true}
}

// generation is the resolver's flush count, 0 when it does not tell.
func (s *Server) generation() uint64 {
	if s.exp != nil {
		return s.exp.Generation()
	}
	return 0
}

// full answers a datagram the fast path does not read, as miekg's server
// and ServeDNS did: what does not parse is logged and dropped, answers
// are dropped, header-level rejections get FORMERR or NOTIMP, the rest
// goes through decide.
func (r *udpReader) full(pkt []byte, from net.Addr, start time.Time) {
	s := r.u.s
	m := new(dns.Msg)
	if len(pkt) < headerLen || m.Unpack(pkt) != nil {
		s.malformed(from)
		return
	}
	w := &batchWriter{r: r, remote: from}
	switch action := acceptQuery(header(pkt)); action {
	case dns.MsgIgnore:
		return
	case dns.MsgReject, dns.MsgRejectNotImplemented:
		if err := w.WriteMsg(rejectReply(m, action)); err != nil {
			s.log.Debug("dns reply not written", "client", from, "err", err)
		}
		return
	}
	client := netaddr.Of(from)
	p := s.policy()
	o, d, ask := s.decide(p, client, m, start)
	switch {
	case !ask:
	case r.wait():
		r.later(m, nil, from, p, client, d, start)
		return
	default:
		o = busy(d)
	}
	s.reply(w, m, p, client, o, start)
}

// wait takes a slot for a query to wait for the resolver; false when
// maxWaiting already do.
func (r *udpReader) wait() bool {
	select {
	case r.u.slots <- struct{}{}:
		r.u.waiting.Add(1)
		return true
	default:
		return false
	}
}

// later resolves a granted query (m, or pkt when the fast path read it)
// on its own goroutine, holding a slot from wait, and replies straight
// to the socket.
func (r *udpReader) later(m *dns.Msg, pkt []byte, from net.Addr, p *policy.Policy, client netip.Addr, d policy.Decision, start time.Time) {
	u, src := r.u, r.dst
	if m == nil {
		pkt = append([]byte(nil), pkt...) // the reader reuses its buffer
	}
	go func() {
		defer func() {
			<-u.slots
			u.waiting.Done()
		}()
		if m == nil {
			m = new(dns.Msg)
			if err := m.Unpack(pkt); err != nil || len(m.Question) != 1 {
				// parseQuery accepts only what miekg parses; this is
				// the full path's verdict should that ever differ.
				u.s.malformed(from)
				return
			}
		}
		o := u.s.resolve(p, m.Question[0], d)
		u.s.reply(&packetWriter{pc: u.pc, remote: from, src: src}, m, p, client, o, start)
	}()
}

// header is the fixed header of pkt (at least headerLen bytes) as miekg's
// MsgAcceptFunc sees it.
func header(pkt []byte) dns.Header {
	return dns.Header{
		Id:      binary.BigEndian.Uint16(pkt),
		Bits:    binary.BigEndian.Uint16(pkt[2:]),
		Qdcount: binary.BigEndian.Uint16(pkt[4:]),
		Ancount: binary.BigEndian.Uint16(pkt[6:]),
		Nscount: binary.BigEndian.Uint16(pkt[8:]),
		Arcount: binary.BigEndian.Uint16(pkt[10:]),
	}
}

// rejectReply is the reply miekg's server sends for a message
// acceptQuery rejects: the header alone, as a response, FORMERR, or
// NOTIMP with the opcode kept.
func rejectReply(m *dns.Msg, action dns.MsgAcceptAction) *dns.Msg {
	reply := &dns.Msg{MsgHdr: m.MsgHdr}
	opcode := reply.Opcode
	reply.SetRcodeFormatError(reply)
	reply.Zero = false
	if action == dns.MsgRejectNotImplemented {
		reply.Opcode = opcode
		reply.Rcode = dns.RcodeNotImplemented
	}
	return reply
}
