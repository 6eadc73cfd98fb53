package udpserve

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A socket bound to every address must answer from the address each query
// was sent to: a client checking the source (any connected UDP socket)
// drops anything else. miekg's server does this with IP_PKTINFO and
// IPV6_PKTINFO; the readers do the same, reading and writing the control
// messages in place so that a reply costs no allocation.

// oobSize holds either family's packet-info message.
var oobSize = syscall.CmsgSpace(20)

// enablePktinfo asks the kernel for each datagram's destination, in
// whichever families the socket takes, as miekg's server does. It reports
// whether either was accepted.
func enablePktinfo(c *net.UDPConn) bool {
	err6 := ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	err4 := ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	return err6 == nil || err4 == nil
}

// pktinfoDst returns the destination address a control-message buffer
// reports, the IPv6 message first as miekg does (for IPv4 on a dual-stack
// socket it is the mapped address); the zero Addr when there is none.
func pktinfoDst(oob []byte) netip.Addr {
	var v4 netip.Addr
	hdr := syscall.CmsgLen(0)
	for len(oob) >= hdr {
		n, level, typ := cmsgHeader(oob)
		if n < hdr || n > len(oob) {
			return netip.Addr{}
		}
		data := oob[hdr:n]
		switch {
		case level == syscall.IPPROTO_IPV6 && typ == syscall.IPV6_PKTINFO && len(data) >= 20:
			return netip.AddrFrom16([16]byte(data[:16]))
		case level == syscall.IPPROTO_IP && typ == syscall.IP_PKTINFO && len(data) >= 12:
			v4 = netip.AddrFrom4([4]byte(data[8:12])) // ipi_addr, the header's destination
		}
		oob = oob[min(syscall.CmsgSpace(n-hdr), len(oob)):]
	}
	return v4
}

// appendPktinfo appends the control message that sends a reply from src:
// IP_PKTINFO with src as ipi_spec_dst for IPv4 (mapped or not, which the
// kernel takes on a dual-stack socket too), IPV6_PKTINFO otherwise; the
// interface is left to routing, as miekg leaves it.
func appendPktinfo(b []byte, src netip.Addr) []byte {
	if !src.IsValid() {
		return b
	}
	if src.Is4() || src.Is4In6() {
		out, data := appendCmsg(b, syscall.IPPROTO_IP, syscall.IP_PKTINFO, 12)
		a := src.Unmap().As4()
		copy(data[4:8], a[:]) // ipi_spec_dst
		return out
	}
	out, data := appendCmsg(b, syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO, 20)
	a := src.As16()
	copy(data[:16], a[:]) // ipi6_addr
	return out
}

// cmsgHeader reads a cmsghdr: its length field is as wide as a pointer.
func cmsgHeader(b []byte) (n, level, typ int) {
	if syscall.SizeofCmsghdr == 16 {
		n = int(binary.NativeEndian.Uint64(b))
	} else {
		n = int(binary.NativeEndian.Uint32(b))
	}
	level = int(int32(binary.NativeEndian.Uint32(b[syscall.SizeofCmsghdr-8:])))
	typ = int(int32(binary.NativeEndian.Uint32(b[syscall.SizeofCmsghdr-4:])))
	return n, level, typ
}

// appendCmsg appends a zeroed control message of datalen bytes and
// returns the buffer and the message's data.
func appendCmsg(b []byte, level, typ, datalen int) ([]byte, []byte) {
	start := len(b)
	b = append(b, make([]byte, syscall.CmsgSpace(datalen))...)
	h := b[start:]
	if syscall.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(h, uint64(syscall.CmsgLen(datalen)))
	} else {
		binary.NativeEndian.PutUint32(h, uint32(syscall.CmsgLen(datalen)))
	}
	binary.NativeEndian.PutUint32(h[syscall.SizeofCmsghdr-8:], uint32(level))
	binary.NativeEndian.PutUint32(h[syscall.SizeofCmsghdr-4:], uint32(typ))
	return b, h[syscall.CmsgLen(0) : syscall.CmsgLen(0)+datalen]
}
