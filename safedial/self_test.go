package safedial

import (
	"net"
	"net/netip"
	"testing"
)

func TestSelfSetUnspecified(t *testing.T) {
	s := NewSelfSet([]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128"), netip.MustParseAddrPort("127.0.0.1:9090")})
	cases := []struct {
		ap   string
		want bool
	}{
		{"127.0.0.1:3128", true},
		{"127.9.9.9:3128", true},
		{"[::1]:3128", true},
		{"[::ffff:127.0.0.1]:3128", true},
		{"0.0.0.0:3128", true},
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", false},
		{"192.0.2.55:3128", false}, // not a local address (TEST-NET-1)
		{"127.0.0.1:3129", false},
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() {
			cases = append(cases, struct {
				ap   string
				want bool
			}{netip.AddrPortFrom(p.Addr(), 3128).String(), true})
		}
	}
	for _, c := range cases {
		if got := s.Contains(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("Contains(%s): got %v, want %v", c.ap, got, c.want)
		}
	}
}
