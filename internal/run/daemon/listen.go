package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/egressd/egressd/internal/lib/tcplisten"
)

// Addrs are the addresses egressd actually bound (":0" in tests becomes a
// real port). An empty string means that listener is off.
type Addrs struct {
	Proxy   string
	DNS     string
	Gateway string
	Admin   string
}

type listeners struct {
	proxy, gateway, admin net.Listener
	dnsUDP                net.PacketConn
	dnsTCP                net.Listener
}

func (l *listeners) addrs() Addrs {
	var a Addrs
	if l.proxy != nil {
		a.Proxy = l.proxy.Addr().String()
	}
	if l.dnsUDP != nil {
		a.DNS = l.dnsUDP.LocalAddr().String()
	}
	if l.gateway != nil {
		a.Gateway = l.gateway.Addr().String()
	}
	if l.admin != nil {
		a.Admin = l.admin.Addr().String()
	}
	return a
}

func (l *listeners) close() {
	for _, c := range []interface{ Close() error }{l.proxy, l.gateway, l.admin, l.dnsTCP} {
		// A nil net.Listener converts to a nil interface here.
		if c != nil {
			c.Close()
		}
	}
	if l.dnsUDP != nil {
		l.dnsUDP.Close()
	}
}

// bind opens every configured listener before anything serves, so a port
// conflict stops egressd at start instead of leaving it half up.
func bind(proxyAddr, dnsAddr, gatewayAddr, adminAddr string) (*listeners, error) {
	l := &listeners{}
	var err error
	open := func(name, addr string) net.Listener {
		if err != nil || addr == "" {
			return nil
		}
		var ln net.Listener
		ln, err = tcplisten.Listen(addr)
		if err != nil {
			err = fmt.Errorf("listen %s on %s: %w", name, addr, err)
			return nil
		}
		return ln
	}
	l.proxy = open("proxy", proxyAddr)
	l.gateway = open("gateway", gatewayAddr)
	l.admin = open("admin", adminAddr)
	if err == nil && dnsAddr != "" {
		l.dnsUDP, l.dnsTCP, err = bindDNS(dnsAddr)
	}
	if err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// bindDNS opens UDP and TCP on the same port; with port 0 the kernel picks
// the UDP port and TCP must follow it, which can collide, so it retries.
func bindDNS(addr string) (net.PacketConn, net.Listener, error) {
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen dns on %s/udp: %w", addr, err)
		}
		ln, err := tcplisten.Listen(pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return nil, nil, fmt.Errorf("listen dns on %s/tcp: %w", addr, err)
		}
	}
	return nil, nil, errors.New("listen dns: no port free for both udp and tcp")
}

// selfAddrs lists what egressd must never dial (every listener, as
// addr:port) and never hand out in DNS answers (the listeners' IPs; for a
// wildcard listener, every interface address).
func selfAddrs(a Addrs) ([]netip.AddrPort, []netip.Addr) {
	var ports []netip.AddrPort
	ips := map[netip.Addr]bool{}
	for _, s := range []string{a.Proxy, a.DNS, a.Gateway, a.Admin} {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		ports = append(ports, ap)
		if ap.Addr().IsUnspecified() {
			for _, ip := range interfaceAddrs() {
				ips[ip] = true
			}
		} else {
			ips[ap.Addr()] = true
		}
	}
	out := make([]netip.Addr, 0, len(ips))
	for ip := range ips {
		out = append(out, ip)
	}
	return ports, out
}

func interfaceAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
