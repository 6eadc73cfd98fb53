package udpserve

import (
	"net"
	"net/netip"
)

// message is one datagram read or one reply to write: its bytes, its
// control messages (packet info) and the peer's address.
type message struct {
	buf  []byte // read: the whole buffer; write: the reply
	n    int    // read: the datagram's length
	oob  []byte // read: the whole buffer; write: the control messages
	nn   int    // read: the control messages' length
	addr netip.AddrPort
}

// batchConn moves datagrams in batches: recvmmsg and sendmmsg on Linux
// (mmsgConn), one datagram per call elsewhere.
type batchConn interface {
	// readBatch fills ms[:n] with the datagrams waiting (at least one),
	// blocking until there is one or the read deadline passes.
	readBatch(ms []message) (n int, err error)
	// writeBatch writes ms in order; n counts those written, and an
	// error is about ms[n].
	writeBatch(ms []message) (n int, err error)
}

// wantPktinfo asks for each datagram's destination address (see pktinfo)
// where pc needs it, and reports whether the kernel gives it.
func wantPktinfo(pc net.PacketConn) bool {
	c, ok := pc.(*net.UDPConn)
	if !ok {
		return false
	}
	a, _ := c.LocalAddr().(*net.UDPAddr)
	// Only a socket bound to every address needs the destination of each
	// datagram: one bound to a single address (compose binds egressd's)
	// always answers from it, and the control messages would cost every
	// datagram a parse in the kernel and here.
	return a != nil && a.IP.IsUnspecified() && enablePktinfo(c)
}

// newBatchConn returns pc as a batchConn for one reader.
func newBatchConn(pc net.PacketConn) batchConn {
	c, ok := pc.(*net.UDPConn)
	if !ok {
		return plainConn{pc}
	}
	if mc, err := newMmsgConn(c); err == nil {
		return mc
	}
	return udpConn{c}
}

// udpConn moves one datagram per call, control messages included.
type udpConn struct{ c *net.UDPConn }

func (c udpConn) readBatch(ms []message) (int, error) {
	m := &ms[0]
	n, nn, _, from, err := c.c.ReadMsgUDPAddrPort(m.buf, m.oob)
	if err != nil {
		return 0, err
	}
	m.n, m.nn, m.addr = n, nn, from
	return 1, nil
}

func (c udpConn) writeBatch(ms []message) (int, error) {
	for i, m := range ms {
		if _, _, err := c.c.WriteMsgUDPAddrPort(m.buf, m.oob, m.addr); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}

// plainConn adapts any net.PacketConn, one datagram per call and without
// control messages.
type plainConn struct{ pc net.PacketConn }

func (c plainConn) readBatch(ms []message) (int, error) {
	n, from, err := c.pc.ReadFrom(ms[0].buf)
	if err != nil {
		return 0, err
	}
	ms[0].n, ms[0].nn, ms[0].addr = n, 0, addrPort(from)
	return 1, nil
}

func (c plainConn) writeBatch(ms []message) (int, error) {
	for i, m := range ms {
		if _, err := c.pc.WriteTo(m.buf, net.UDPAddrFromAddrPort(m.addr)); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}

// addrPort is a's address and port; the zero AddrPort for an address
// that is neither a UDP address nor "ip:port".
func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
