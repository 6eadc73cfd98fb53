// Package netaddr owns how egressd names a client: the one netip.Addr
// (unmapped, so an IPv4 client seen on a dual-stack socket has one
// identity) that rate limits, connection caps and the decision log key on,
// and its log spelling. The proxy and the DNS server share it so the same
// client is the same string in every log line.
package netaddr

import (
	"net"
	"net/netip"
)

// Of returns the IP of a socket's remote address, unmapped; the zero Addr
// when a is nil or holds no IP. TCP and UDP addresses take a path that
// neither parses nor allocates.
func Of(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	return Parse(a.String())
}

// Parse returns the IP of an "ip:port" string such as
// http.Request.RemoteAddr, unmapped; the zero Addr when s is not one.
func Parse(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// String is a's log spelling: "" for the zero Addr (an unknown client),
// never "invalid IP".
func String(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
