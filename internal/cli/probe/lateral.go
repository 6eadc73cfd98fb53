package probe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// checkLateral scans the agent's subnet for other hosts answering on the
// probe's ports. Reaching a neighbour is not necessarily wrong (egressd is
// one), so each is listed as Info for the user to judge.
func (p *plan) checkLateral(ctx context.Context, c *collector, gateways []netip.Addr) {
	if p.Lateral == "" {
		return
	}
	pfx, self := p.lateral, netip.Addr{}
	if p.Lateral == LateralAuto {
		var err error
		if pfx, self, err = p.ownSubnet(); err != nil {
			c.add(Result{Check: CheckLateral, Target: LateralAuto, Status: Info, Detail: "no subnet to scan: " + err.Error()})
			return
		}
	}
	skip := map[netip.Addr]bool{self: true}
	for _, a := range append(gateways, p.hosts...) { // already probed as hosts
		skip[a] = true
	}
	addrs := p.liveHosts(ctx, subnetHosts(pfx, skip))
	res := p.scan(ctx, addrs, p.ports)
	found := 0
	for _, a := range addrs {
		open, refused := byOutcome(res, a, p.ports)
		if len(open) == 0 && len(refused) == 0 {
			continue
		}
		found++
		detail := "up, no listed port open"
		if len(open) > 0 {
			detail = "answers on " + portList(open)
		}
		if p.isEgressd(a) {
			detail += " (egressd)"
		}
		c.add(Result{Check: CheckLateral, Target: a.String(), Status: Info, Detail: detail})
	}
	if found == 0 {
		c.add(Result{Check: CheckLateral, Target: pfx.String(), Status: Pass,
			Detail: fmt.Sprintf("no other host answered on %s", portList(p.ports))})
	}
}

// subnetHosts lists pfx's addresses except the network and broadcast
// addresses (for prefixes that have them) and those in skip.
func subnetHosts(pfx netip.Prefix, skip map[netip.Addr]bool) []netip.Addr {
	var out []netip.Addr
	first := pfx.Masked().Addr()
	for a := first; pfx.Contains(a) && len(out) < maxLateralHosts; a = a.Next() {
		if pfx.Bits() <= 30 && (a == first || !pfx.Contains(a.Next())) {
			continue
		}
		if !skip[a] {
			out = append(out, a)
		}
	}
	return out
}

// ownSubnet finds the IPv4 address and subnet of the interface carrying the
// default route (or the first non-loopback interface), narrowed to the /24
// around the address so the scan stays bounded.
func (p *plan) ownSubnet() (netip.Prefix, netip.Addr, error) {
	want := ""
	if r4, err := readRoutes(p.RouteFile, DefaultRoutes4); err == nil && len(r4) > 0 {
		want = r4[0].Iface
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 || (want != "" && ifc.Name != want) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP.To4())
			ones, _ := ipn.Mask.Size()
			return netip.PrefixFrom(ip, max(ones, 24)).Masked(), ip, nil
		}
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("no IPv4 interface found")
}

// liveHosts narrows a subnet to the addresses that exist, so the full port
// scan does not wait out a timeout on every port of every empty address (a
// /24 took 40s that way). One attempt per address either gets an answer
// or makes the kernel ARP for it; a neighbour that drops the SYN still
// answers ARP, so the neighbour table catches hosts that filter TCP. Without
// a readable table every address is kept.
func (p *plan) liveHosts(ctx context.Context, addrs []netip.Addr) []netip.Addr {
	first := p.scan(ctx, addrs, p.ports[:1])
	arp, err := readARP(p.ARPFile)
	if err != nil {
		return addrs
	}
	var live []netip.Addr
	for _, a := range addrs {
		if first[netip.AddrPortFrom(a, uint16(p.ports[0]))].Answered() || arp[a] {
			live = append(live, a)
		}
	}
	return live
}

// atfCom is ATF_COM from <linux/if_arp.h>: the entry has a hardware address.
const atfCom = 0x2

// readARP returns the IPv4 neighbours with a resolved hardware address
// from a /proc/net/arp file.
func readARP(path string) (map[netip.Addr]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseARP(f)
}

func parseARP(r io.Reader) (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		flags, ferr := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32)
		if err != nil || ferr != nil { // the header line
			continue
		}
		if flags&atfCom != 0 {
			out[a] = true
		}
	}
	return out, sc.Err()
}
