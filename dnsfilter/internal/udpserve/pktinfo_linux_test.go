package udpserve

import (
	"bytes"
	"net/netip"
	"syscall"
	"testing"
)

// TestPktinfoLayout: the control messages written and read are laid out
// as the kernel's in_pktinfo and in6_pktinfo, and a buffer holding
// something else yields no address.
func TestPktinfoLayout(t *testing.T) {
	v4 := netip.MustParseAddr("127.0.0.2")
	b := appendPktinfo(nil, v4)
	n, level, typ := cmsgHeader(b)
	if n != syscall.CmsgLen(12) || level != syscall.IPPROTO_IP || typ != syscall.IP_PKTINFO || len(b) != syscall.CmsgSpace(12) {
		t.Fatalf("IPv4: header %d/%d/%d, %d bytes", n, level, typ, len(b))
	}
	data := b[syscall.CmsgLen(0):]
	if !bytes.Equal(data[:4], []byte{0, 0, 0, 0}) || !bytes.Equal(data[4:8], []byte{127, 0, 0, 2}) {
		t.Errorf("in_pktinfo %x, want ifindex 0, spec_dst 127.0.0.2", data[:12])
	}
	// A received in_pktinfo names the header's destination in ipi_addr.
	copy(data[8:12], []byte{127, 0, 0, 3})
	if got := pktinfoDst(b); got != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("read %v from in_pktinfo, want 127.0.0.3", got)
	}
	if got, want := appendPktinfo(nil, netip.MustParseAddr("::ffff:127.0.0.2")), appendPktinfo(nil, v4); !bytes.Equal(got, want) {
		t.Errorf("mapped IPv4 source: got %x, want an IPv4 message", got)
	}

	v6 := netip.MustParseAddr("::1")
	b6 := appendPktinfo(nil, v6)
	if n, level, typ := cmsgHeader(b6); n != syscall.CmsgLen(20) || level != syscall.IPPROTO_IPV6 || typ != syscall.IPV6_PKTINFO {
		t.Fatalf("IPv6: header %d/%d/%d", n, level, typ)
	}
	// Both families in one buffer, as a dual-stack socket may report:
	// the IPv6 message wins.
	if got := pktinfoDst(append(append([]byte(nil), b...), b6...)); got != v6 {
		t.Errorf("read %v from both, want %v", got, v6)
	}
	for _, junk := range [][]byte{nil, {1, 2, 3}, make([]byte, syscall.CmsgLen(0)), bytes.Repeat([]byte{0xff}, 64)} {
		if got := pktinfoDst(junk); got.IsValid() {
			t.Errorf("read %v from %x, want none", got, junk)
		}
	}
	if got := appendPktinfo([]byte{9}, netip.Addr{}); !bytes.Equal(got, []byte{9}) {
		t.Errorf("no source: got %x, want the buffer unchanged", got)
	}
}

// FuzzPktinfoDst: any control-message buffer the kernel (or anything else)
// hands over is read without panicking, and an IPv6 message written by
// appendPktinfo reads back as its address.
func FuzzPktinfoDst(f *testing.F) {
	f.Add(appendPktinfo(nil, netip.MustParseAddr("127.0.0.2")), []byte(netip.MustParseAddr("::1").AsSlice()))
	f.Add([]byte{1, 2, 3}, make([]byte, 16))
	f.Fuzz(func(t *testing.T, oob, addr []byte) {
		_ = pktinfoDst(oob)
		if len(addr) != 16 {
			return
		}
		a := netip.AddrFrom16([16]byte(addr))
		if a.Is4In6() {
			return
		}
		if got := pktinfoDst(appendPktinfo(nil, a)); got != a {
			t.Fatalf("pktinfoDst(appendPktinfo(%v)) = %v", a, got)
		}
	})
}
