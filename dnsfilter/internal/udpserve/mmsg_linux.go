//go:build linux

package udpserve

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgConn moves batches with recvmmsg and sendmmsg, called raw through
// the socket's RawConn. The socket is non-blocking, so neither call can
// block, and a raw call skips the runtime's system-call bookkeeping: a
// sendmmsg delivers its replies on loopback inline and can run long
// enough that the scheduler would hand the reader's processor to another
// thread (a wake-up per batch). Addresses are read into and written from
// fixed buffers, so a batch allocates nothing; x/net's ReadBatch
// allocated a *net.UDPAddr per datagram.
//
// One mmsgConn belongs to one reader: its buffers are not shared.
type mmsgConn struct {
	rc     syscall.RawConn
	v6     bool // an AF_INET6 socket: IPv4 peers are written mapped
	rd, wr mmsgBufs
	// The RawConn callbacks, bound once: a closure made per call would
	// escape, an allocation per batch.
	recv, send func(fd uintptr) bool
}

type mmsgBufs struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family
	k     int                     // headers the next call passes
	n     int                     // what it returned
	errno syscall.Errno
}

// call makes one recvmmsg or sendmmsg of b's first k headers; false,
// for RawConn to wait for the socket, when there is nothing to do yet.
func (b *mmsgBufs) call(trap, fd uintptr) bool {
	b.n, b.errno = mmsg(trap, fd, b.hdrs[:b.k])
	return b.errno != syscall.EAGAIN
}

func newMmsgBufs() mmsgBufs {
	return mmsgBufs{
		hdrs:  make([]unix.Mmsghdr, BatchSize),
		iovs:  make([]unix.Iovec, BatchSize),
		names: make([]unix.RawSockaddrInet6, BatchSize),
	}
}

func newMmsgConn(c *net.UDPConn) (batchConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udpserve: %w", err)
	}
	var sa unix.Sockaddr
	cerr := rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) })
	if err := errors.Join(cerr, err); err != nil {
		return nil, fmt.Errorf("udpserve: getsockname: %w", err)
	}
	_, v6 := sa.(*unix.SockaddrInet6)
	mc := &mmsgConn{rc: rc, v6: v6, rd: newMmsgBufs(), wr: newMmsgBufs()}
	mc.recv = func(fd uintptr) bool { return mc.rd.call(unix.SYS_RECVMMSG, fd) }
	mc.send = func(fd uintptr) bool { return mc.wr.call(unix.SYS_SENDMMSG, fd) }
	return mc, nil
}

// point sets hdr i of bufs to carry p and oob, with the name buffer.
func (b *mmsgBufs) point(i int, p, oob []byte, namelen uint32) {
	h := &b.hdrs[i].Hdr
	iov := &b.iovs[i]
	iov.Base = nil
	if len(p) > 0 {
		iov.Base = &p[0]
	}
	iov.SetLen(len(p))
	h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	h.Namelen = namelen
	h.Iov = iov
	h.SetIovlen(1)
	h.Control = nil
	if len(oob) > 0 {
		h.Control = &oob[0]
	}
	h.SetControllen(len(oob))
	h.Flags = 0
}

func (c *mmsgConn) readBatch(ms []message) (int, error) {
	b := &c.rd
	for i := range ms {
		b.point(i, ms[i].buf, ms[i].oob, unix.SizeofSockaddrInet6)
	}
	b.k = len(ms)
	if err := c.rc.Read(c.recv); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", b.errno)
	}
	for i := range ms[:b.n] {
		h := &b.hdrs[i]
		ms[i].n, ms[i].nn = int(h.Len), int(h.Hdr.Controllen)
		ms[i].addr = readName(&b.names[i])
	}
	return b.n, nil
}

func (c *mmsgConn) writeBatch(ms []message) (int, error) {
	b := &c.wr
	k := 0
	for ; k < len(ms); k++ {
		namelen, ok := c.writeName(&b.names[k], ms[k].addr)
		if !ok {
			break
		}
		b.point(k, ms[k].buf, ms[k].oob, namelen)
	}
	if k == 0 {
		return 0, fmt.Errorf("udpserve: no route from this socket's family to %v", ms[0].addr)
	}
	b.k = k
	if err := c.rc.Write(c.send); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, os.NewSyscallError("sendmmsg", b.errno)
	}
	return b.n, nil
}

// mmsg makes one recvmmsg or sendmmsg call on the non-blocking socket fd.
func mmsg(trap, fd uintptr, hs []unix.Mmsghdr) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(r), 0
		}
	}
}

// readName is the peer address the kernel wrote; a link-local IPv6
// peer's scope becomes its zone, by number.
func readName(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// writeName writes ap as the socket's family spells it and returns its
// length; false when this socket cannot send there (IPv6 on IPv4).
func (c *mmsgConn) writeName(sa *unix.RawSockaddrInet6, ap netip.AddrPort) (uint32, bool) {
	a := ap.Addr()
	if !c.v6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0, false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		putPort(&sa4.Port, ap.Port())
		return unix.SizeofSockaddrInet4, true
	}
	if !a.IsValid() {
		return 0, false
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: zoneIndex(a.Zone())}
	putPort(&sa.Port, ap.Port())
	return unix.SizeofSockaddrInet6, true
}

// zoneIndex is the interface index a zone names, by number or by name.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// A sockaddr's port is in network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}
