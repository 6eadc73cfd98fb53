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

// localNonLoopback returns one address of a local interface that is not
// loopback, or the zero Addr when the machine has none.
func localNonLoopback(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() {
			return p.Addr().Unmap().WithZone("")
		}
	}
	return netip.Addr{}
}

func TestSelfSetContainsAddr(t *testing.T) {
	iface := localNonLoopback(t)
	type probe struct {
		addr string
		want bool
	}
	tests := []struct {
		name   string
		set    *SelfSet
		probes []probe
		iface  bool // whether a local interface address counts
	}{
		{"listeners on one address", NewSelfSet([]netip.AddrPort{netip.MustParseAddrPort("172.30.0.2:3128"), netip.MustParseAddrPort("[fd00::2]:53")}),
			[]probe{{"172.30.0.2", true}, {"::ffff:172.30.0.2", true}, {"fd00::2", true}, {"172.30.0.3", false}, {"127.0.0.1", false},
				{"0.0.0.0", true}, {"::", true}}, false},
		{"a listener on an unspecified address", NewSelfSet([]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128")}),
			[]probe{{"127.0.0.1", true}, {"::1", true}, {"0.0.0.0", true}, {"192.0.2.55", false}}, true},
		{"whole addresses", NewSelfAddrs([]netip.Addr{netip.MustParseAddr("::ffff:172.30.0.2"), netip.MustParseAddr("fe80::2%eth0"), {}}),
			[]probe{{"172.30.0.2", true}, {"fe80::2", true}, {"fe80::2%eth1", true}, {"127.0.0.1", false}}, false},
		{"whole unspecified", NewSelfAddrs([]netip.Addr{netip.IPv6Unspecified()}),
			[]probe{{"127.0.0.1", true}, {"192.0.2.55", false}}, true},
		{"none", NewSelfAddrs(nil), []probe{{"127.0.0.1", false}, {"0.0.0.0", false}}, false},
		{"nil", nil, []probe{{"127.0.0.1", false}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			probes := tc.probes
			if iface.IsValid() {
				probes = append(probes, probe{iface.String(), tc.iface})
			}
			for _, p := range probes {
				if got := tc.set.ContainsAddr(netip.MustParseAddr(p.addr)); got != p.want {
					t.Errorf("ContainsAddr(%s): got %v, want %v", p.addr, got, p.want)
				}
			}
		})
	}
}

// TestSelfSetUnspecifiedTarget: dialing 0.0.0.0 or :: reaches this host,
// so on a port egressd listens on it is egressd even when every listener
// is bound to one address; on other ports it is not.
func TestSelfSetUnspecifiedTarget(t *testing.T) {
	s := NewSelfSet([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:3128"), netip.MustParseAddrPort("172.30.0.2:53")})
	for _, c := range []struct {
		ap   string
		want bool
	}{
		{"0.0.0.0:3128", true},
		{"[::]:3128", true},
		{"[::ffff:0.0.0.0]:3128", true},
		{"0.0.0.0:53", true},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
	} {
		if got := s.Contains(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("Contains(%s): got %v, want %v", c.ap, got, c.want)
		}
	}
	if NewSelfSet(nil).Contains(netip.MustParseAddrPort("0.0.0.0:3128")) {
		t.Error("an empty set contains 0.0.0.0:3128, want nothing")
	}
	if !NewSelfAddrs([]netip.Addr{netip.MustParseAddr("172.30.0.2")}).Contains(netip.MustParseAddrPort("0.0.0.0:1")) {
		t.Error("0.0.0.0:1 with egressd's whole address given: got not self, want self")
	}
}

// TestSelfAddrsEveryPort: an address given whole is egressd on every port
// when dialed, too.
func TestSelfAddrsEveryPort(t *testing.T) {
	s := NewSelfAddrs([]netip.Addr{netip.MustParseAddr("172.30.0.2")})
	for _, c := range []struct {
		ap   string
		want bool
	}{
		{"172.30.0.2:1", true},
		{"172.30.0.2:443", true},
		{"[::ffff:172.30.0.2]:53", true},
		{"172.30.0.3:443", false},
		{"127.0.0.1:443", false},
	} {
		if got := s.Contains(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("Contains(%s): got %v, want %v", c.ap, got, c.want)
		}
	}
}
