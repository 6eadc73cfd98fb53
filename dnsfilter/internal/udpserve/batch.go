package udpserve

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// Batch collects the replies of one batch of datagrams. A Handler queues a
// reply with Reply and Commit; the reader writes them all at once.
type Batch struct {
	pc      net.PacketConn
	pktinfo bool
	out     []ipv4.Message
	n       int
	dst     netip.Addr // where the datagram being answered was sent
}

func newBatch(pc net.PacketConn, pktinfo bool) Batch {
	b := Batch{pc: pc, pktinfo: pktinfo, out: make([]ipv4.Message, BatchSize)}
	for i := range b.out {
		b.out[i].Buffers = [][]byte{make([]byte, 0, MaxSize)}
		if pktinfo {
			b.out[i].OOB = make([]byte, 0, oobSize)
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
		replies, oob = append(replies, m.Buffers[0]), append(oob, m.OOB)
	}
	return replies, oob
}

// Reset forgets the queued replies.
func (b *Batch) Reset() { b.n = 0 }

// Reply returns the buffer for the next reply, empty, with room for MaxSize
// bytes.
func (b *Batch) Reply() []byte { return b.out[b.n].Buffers[0][:0] }

// Commit queues p (built on Reply's buffer, or any bytes) for to, the
// sender of the datagram being answered, from the address it was sent to.
func (b *Batch) Commit(to net.Addr, p []byte) {
	m := &b.out[b.n]
	m.Buffers[0] = append(m.Buffers[0][:0], p...)
	m.Addr = to
	if b.pktinfo {
		m.OOB = appendPktinfo(m.OOB[:0], b.dst)
	}
	b.n++
}

// Later returns a Writer that answers the datagram being handled after the
// reader has moved on: straight to the socket, from the same address.
func (b *Batch) Later(to net.Addr) Writer {
	return Writer{pc: b.pc, to: to, src: b.dst}
}

// LocalAddr is the socket's address.
func (b *Batch) LocalAddr() net.Addr { return b.pc.LocalAddr() }

// Writer sends one reply straight to the socket, from the address the
// query was sent to when that is known.
type Writer struct {
	pc  net.PacketConn
	to  net.Addr
	src netip.Addr
}

// Write sends p to the query's sender.
func (w Writer) Write(p []byte) (int, error) {
	c, ok := w.pc.(*net.UDPConn)
	to, isUDP := w.to.(*net.UDPAddr)
	if !ok || !isUDP || !w.src.IsValid() {
		return w.pc.WriteTo(p, w.to)
	}
	n, _, err := c.WriteMsgUDP(p, appendPktinfo(nil, w.src), to)
	return n, err
}

// LocalAddr is the socket's address.
func (w Writer) LocalAddr() net.Addr { return w.pc.LocalAddr() }

// RemoteAddr is the query's sender.
func (w Writer) RemoteAddr() net.Addr { return w.to }
