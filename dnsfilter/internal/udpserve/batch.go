package udpserve

import (
	"net"
	"net/netip"
)

// Batch collects the replies of one batch of datagrams. A Handler queues a
// reply with Reply and Commit; the reader writes them all at once.
type Batch struct {
	pc      net.PacketConn
	pktinfo bool
	out     []message
	n       int
	dst     netip.Addr // where the datagram being answered was sent
}

func newBatch(pc net.PacketConn, pktinfo bool) Batch {
	b := Batch{pc: pc, pktinfo: pktinfo, out: make([]message, BatchSize)}
	for i := range b.out {
		b.out[i].buf = make([]byte, 0, MaxSize)
		if pktinfo {
			b.out[i].oob = make([]byte, 0, oobSize)
		}
	}
	return b
}

// NewBatch returns a batch whose replies go nowhere until read with
// Replies: for tests that drive a Handler without a socket. With dst valid
// the replies carry it as their source, as on a socket bound to every
// address.
func NewBatch(pc net.PacketConn, dst netip.Addr) *Batch {
	b := newBatch(pc, dst.IsValid())
	b.dst = dst
	return &b
}

// Replies returns the replies queued since the last Reset and their control
// messages (the source address, when known).
func (b *Batch) Replies() (replies, oob [][]byte) {
	for _, m := range b.out[:b.n] {
		replies, oob = append(replies, m.buf), append(oob, m.oob)
	}
	return replies, oob
}

// Reset forgets the queued replies.
func (b *Batch) Reset() { b.n = 0 }

// Reply returns the buffer for the next reply, empty, with room for MaxSize
// bytes.
func (b *Batch) Reply() []byte { return b.out[b.n].buf[:0] }

// Commit queues p (built on Reply's buffer, or any bytes) for to, the
// sender of the datagram being answered, from the address it was sent to.
func (b *Batch) Commit(to netip.AddrPort, p []byte) {
	m := &b.out[b.n]
	m.buf = append(m.buf[:0], p...)
	m.addr = to
	if b.pktinfo {
		m.oob = appendPktinfo(m.oob[:0], b.dst)
	}
	b.n++
}

// Later returns a Writer that answers the datagram being handled after the
// reader has moved on: straight to the socket, from the same address.
func (b *Batch) Later(to netip.AddrPort) Writer {
	return Writer{pc: b.pc, to: to, src: b.dst}
}

// LocalAddr is the socket's address.
func (b *Batch) LocalAddr() net.Addr { return b.pc.LocalAddr() }

// Writer sends one reply straight to the socket, from the address the
// query was sent to when that is known.
type Writer struct {
	pc  net.PacketConn
	to  netip.AddrPort
	src netip.Addr
}

// Write sends p to the query's sender.
func (w Writer) Write(p []byte) (int, error) {
	c, ok := w.pc.(*net.UDPConn)
	if !ok {
		return w.pc.WriteTo(p, w.RemoteAddr())
	}
	n, _, err := c.WriteMsgUDPAddrPort(p, appendPktinfo(nil, w.src), w.to)
	return n, err
}

// LocalAddr is the socket's address.
func (w Writer) LocalAddr() net.Addr { return w.pc.LocalAddr() }

// RemoteAddr is the query's sender.
func (w Writer) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.to) }
