package dnsfilter

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsfilter/internal/udpserve"
	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
)

const (
	// maxWaiting bounds UDP queries waiting for the resolver at once;
	// past it a query is answered SERVFAIL at once, as the resolver does
	// when too many distinct names are in flight.
	maxWaiting = 4096
	// maxClientNames bounds each handler's cache of client log spellings.
	maxClientNames = 256
)

// udpHandler is one UDP reader's side of the server, reused across
// datagrams so a query answered from the reply cache allocates nothing.
type udpHandler struct {
	s       *Server
	wq      wireQuery
	q       query
	clients map[netip.Addr]string // log spellings of recent clients

	lastClient netip.Addr
	lastName   string

	logs []pendingLog // decision lines of the batch, written once it is sent

	// The datagram being answered.
	b    *udpserve.Batch
	pkt  []byte
	from netip.AddrPort
	kept *packedReply
}

// pendingLog is a decision line waiting for its batch to be sent.
type pendingLog struct {
	e      declog.Entry
	folded limitSummary
}

func (s *Server) newUDPHandler() *udpHandler {
	return &udpHandler{
		s:       s,
		clients: make(map[netip.Addr]string),
		logs:    make([]pendingLog, 0, udpserve.BatchSize),
		wq:      wireQuery{key: make([]byte, 0, maxNameWire+8)},
	}
}

// Sent writes the batch's decision lines once its replies are sent;
// Duration is each query's time in egressd, sending included, for one
// clock reading.
func (h *udpHandler) Sent() {
	end := h.s.clock()
	for i := range h.logs {
		l := &h.logs[i]
		l.e.Duration = end.Sub(l.e.Time)
		h.s.emit(l.e, l.folded)
	}
	clear(h.logs) // drop the strings until the next batch
	h.logs = h.logs[:0]
	h.b, h.pkt, h.from, h.kept = nil, nil, netip.AddrPort{}, nil
}

// full answers a datagram the fast path does not read, as miekg's server
// and ServeDNS do: what does not parse is logged and dropped, answers are
// dropped, header-level rejections get FORMERR or NOTIMP, the rest goes
// through serve.
func (h *udpHandler) full(now time.Time) {
	s, pkt := h.s, h.pkt
	m := new(dns.Msg)
	if len(pkt) < headerLen || m.Unpack(pkt) != nil {
		s.malformedFrom(h.from.Addr().Unmap())
		return
	}
	w := &batchWriter{b: h.b, remote: h.from}
	switch action := acceptQuery(header(pkt)); action {
	case dns.MsgIgnore:
		return
	case dns.MsgReject, dns.MsgRejectNotImplemented:
		if err := w.WriteMsg(rejectReply(m, action)); err != nil {
			s.log.Debug("dns reply not written", "client", h.from, "err", err)
		}
		return
	}
	q := newMsgQuery(s.policy(), h.from.Addr().Unmap(), m, now)
	s.serve(q, &msgAnswer{s: s, w: w, later: h.later})
}

// clientName is netaddr.String(a), remembered: the decision log needs
// the spelling for every query and the agent's clients are few.
func (h *udpHandler) clientName(a netip.Addr) string {
	if a == h.lastClient {
		return h.lastName // the usual case: one agent asking
	}
	n, ok := h.clients[a]
	if !ok {
		if len(h.clients) >= maxClientNames {
			clear(h.clients)
		}
		n = netaddr.String(a)
		h.clients[a] = n
	}
	h.lastClient, h.lastName = a, n
	return n
}

// waiters counts the UDP queries waiting for the resolver, up to
// maxWaiting, so that shutdown can wait for their replies.
type waiters struct {
	slots chan struct{}
	wg    sync.WaitGroup
}

func (w *waiters) init() { w.slots = make(chan struct{}, maxWaiting) }

func (w *waiters) take() bool {
	select {
	case w.slots <- struct{}{}:
		w.wg.Add(1)
		return true
	default:
		return false
	}
}

func (w *waiters) done() {
	<-w.slots
	w.wg.Done()
}

// wait returns once no query waits, or when ctx ends.
func (w *waiters) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
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

// batchWriter is the dns.ResponseWriter of a datagram answered inline: its
// reply joins the reader's batch.
type batchWriter struct {
	b      *udpserve.Batch
	remote netip.AddrPort
}

func (w *batchWriter) LocalAddr() net.Addr  { return w.b.LocalAddr() }
func (w *batchWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.remote) }
func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	return writeMsg(w, m)
}
func (w *batchWriter) Write(b []byte) (int, error) {
	w.b.Commit(w.remote, b)
	return len(b), nil
}
func (w *batchWriter) Close() error        { return nil }
func (w *batchWriter) TsigStatus() error   { return nil }
func (w *batchWriter) TsigTimersOnly(bool) {}
func (w *batchWriter) Hijack()             {}

// packetWriter is the dns.ResponseWriter of a datagram answered off the
// reader, once the resolver has spoken.
type packetWriter struct{ udpserve.Writer }

func (w *packetWriter) WriteMsg(m *dns.Msg) error { return writeMsg(w, m) }
func (w *packetWriter) Close() error              { return nil }
func (w *packetWriter) TsigStatus() error         { return nil }
func (w *packetWriter) TsigTimersOnly(bool)       {}
func (w *packetWriter) Hijack()                   {}

func writeMsg(w interface{ Write([]byte) (int, error) }, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
