package netaddr

import (
	"net"
	"net/netip"
	"testing"
)

// pipeAddr is a net.Addr that is neither TCP nor UDP, like net.Pipe's.
type pipeAddr string

func (a pipeAddr) Network() string { return "test" }
func (a pipeAddr) String() string  { return string(a) }

func TestOf(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.7")
	v6 := netip.MustParseAddr("2001:db8::7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	tests := []struct {
		name string
		in   net.Addr
		want netip.Addr
	}{
		{"tcp v4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(v4, 80)), v4},
		{"tcp mapped", net.TCPAddrFromAddrPort(netip.AddrPortFrom(mapped, 80)), v4},
		{"udp v6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v6, 53)), v6},
		{"udp mapped", net.UDPAddrFromAddrPort(netip.AddrPortFrom(mapped, 53)), v4},
		{"other with ip:port", pipeAddr("[::ffff:192.0.2.7]:1"), v4},
		{"other without an ip", pipeAddr("pipe"), netip.Addr{}},
		{"nil", nil, netip.Addr{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Of(tc.in); got != tc.want {
				t.Errorf("Of(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"192.0.2.7:1234", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:1234", "192.0.2.7"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"192.0.2.7", ""}, // no port: not a remote address
		{"example.com:80", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := String(Parse(tc.in)); got != tc.want {
			t.Errorf("String(Parse(%q)) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOfAllocs(t *testing.T) {
	ta := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.7:80"))
	ua := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::7]:53"))
	if n := testing.AllocsPerRun(100, func() { Of(ta); Of(ua) }); n != 0 {
		t.Errorf("Of on TCP and UDP addresses: got %v allocations, want 0", n)
	}
}
