package dnsfilter

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsfilter/internal/udpserve"
)

// Datagram answers one datagram (udpserve.Handler). A plain query
// (parseQuery) is read from its bytes and goes through serve with the
// handler as its answerer: denials and refusals are written from the
// bytes, a granted query is answered from the reply cache when it holds a
// reply for this policy that has not expired, and the rest waits for the
// resolver. Any other datagram goes the full way (full). Either way the
// reply and the decision line are the ones ServeDNS would write.
func (h *udpHandler) Datagram(b *udpserve.Batch, pkt []byte, from netip.AddrPort, now time.Time) {
	s := h.s
	h.b, h.pkt, h.from = b, pkt, from
	if !parseQuery(pkt, &h.wq) {
		h.full(now)
		return
	}
	p := s.policy()
	if p == nil {
		h.full(now)
		return
	}
	h.kept = s.replies.get(h.wq.key)
	var host string
	if h.kept != nil {
		host = h.kept.host // spares building the string
	} else {
		host = string(h.wq.host())
	}
	h.q = query{p: p, client: from.Addr().Unmap(), start: now, name: host, host: host, qtype: h.wq.qtype}
	s.serve(&h.q, h)
}

func (h *udpHandler) short(q *query) {
	h.b.Commit(h.from, appendShortReply(h.b.Reply(), &h.wq, q.o.rcode))
}

func (h *udpHandler) cached(q *query) bool {
	k := h.kept
	if k == nil || !k.valid(q.p, h.s.generation(), h.wq.size, q.start) {
		return false
	}
	q.o = outcome{verdict: k.verdict, reason: k.reason, rule: k.rule, log: true}
	h.b.Commit(h.from, k.appendTo(h.b.Reply(), &h.wq, q.start))
	return true
}

func (h *udpHandler) resolve(q *query) bool { return h.later(q) }

// record queues q's decision line until the batch's replies are sent
// (Sent): the log writer's wake-up then never delays a reply.
func (h *udpHandler) record(q *query) {
	if q.o.log {
		e := decisionEntry(q.p, h.clientName(q.client), q.host, qtypeName(q), q.o, q.start)
		h.logs = append(h.logs, pendingLog{e: e, folded: q.o.folded})
	}
}

// later resolves a granted query on its own goroutine, holding a waiting
// slot, and replies straight to the socket; false when every slot is
// taken. A query the fast path read is unpacked there: the reader reuses
// its buffer, so the bytes are copied first.
func (h *udpHandler) later(q *query) bool {
	s := h.s
	if !s.waiting.take() {
		return false
	}
	w := &packetWriter{h.b.Later(h.from)}
	lq := *q
	var pkt []byte
	if lq.msg == nil {
		pkt = bytes.Clone(h.pkt)
	}
	go func() {
		defer s.waiting.done()
		if lq.msg == nil {
			m := new(dns.Msg)
			if err := m.Unpack(pkt); err != nil || len(m.Question) != 1 {
				// parseQuery accepts only what miekg parses; this is
				// the full path's verdict should that ever differ.
				s.malformed(w.RemoteAddr())
				return
			}
			lq.msg = m
		}
		s.finish(w, &lq)
	}()
	return true
}

// generation is the resolver's flush count, 0 when it does not tell.
func (s *Server) generation() uint64 {
	if s.exp != nil {
		return s.exp.Generation()
	}
	return 0
}
