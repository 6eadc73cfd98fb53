package probe

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Route is a default route found in the kernel's routing table.
type Route struct {
	Iface   string
	Gateway netip.Addr // invalid when the route has no gateway (on-link)
}

// Route flags from <linux/route.h>.
const (
	rtfUp      = 0x0001
	rtfGateway = 0x0002
	rtfReject  = 0x0200
)

// DefaultRoutes4 parses /proc/net/route (Linux's text form of the IPv4
// table) and returns its default routes.
func DefaultRoutes4(r io.Reader) ([]Route, error) {
	var out []Route
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first { // header line
			first = false
			continue
		}
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		gw, err2 := strconv.ParseUint(f[2], 16, 32)
		flags, err3 := strconv.ParseUint(f[3], 16, 16)
		mask, err4 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("route table: bad line %q", sc.Text())
		}
		if dst != 0 || mask != 0 || flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		rt := Route{Iface: f[0]}
		if flags&rtfGateway != 0 {
			// The kernel prints the address in host byte order, which
			// is little-endian on every platform the probe runs on.
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], uint32(gw))
			rt.Gateway = netip.AddrFrom4(b)
		}
		out = append(out, rt)
	}
	return out, sc.Err()
}

// DefaultRoutes6 parses /proc/net/ipv6_route and returns its default routes
// (::/0, up, not a reject route, not on lo).
func DefaultRoutes6(r io.Reader) ([]Route, error) {
	var out []Route
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		flags, err := strconv.ParseUint(f[8], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("ipv6 route table: bad line %q", sc.Text())
		}
		if f[0] != strings.Repeat("0", 32) || f[1] != "00" || flags&rtfUp == 0 || flags&rtfReject != 0 || f[9] == "lo" {
			continue
		}
		rt := Route{Iface: f[9]}
		if gw, err := parseHex6(f[4]); err == nil && !gw.IsUnspecified() {
			rt.Gateway = gw.WithZone(f[9]) // usually link-local: needs the zone
		}
		out = append(out, rt)
	}
	return out, sc.Err()
}

func parseHex6(s string) (netip.Addr, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return netip.Addr{}, fmt.Errorf("bad ipv6 address %q", s)
	}
	return netip.AddrFrom16([16]byte(b)), nil
}

// readRoutes opens a route file and parses it with parse.
func readRoutes(path string, parse func(io.Reader) ([]Route, error)) ([]Route, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(f)
}

// Nameservers returns the nameserver addresses of a resolv.conf as
// "ip:53", in file order: what the agent's own lookups use. Inside a Docker
// container on a user network that is 127.0.0.11, Docker's resolver.
func Nameservers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out, sc.Err()
}
