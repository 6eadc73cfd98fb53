// Package probe owns `egressd probe`, the containment audit a user runs from
// inside the agent's network, and the small network checks it is made of:
// TCP reachability with a classified outcome, a one-question DNS client, and
// the health check of egressd's admin listener. Every target is data in
// Options: the probe dials nothing it was not given (or did not read from
// the container's own routing table), so tests point it only at addresses
// they created.
package probe

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Documented defaults for the command line. Run itself uses only what
// Options holds.
var (
	// DefaultPorts are the service ports tried on host addresses and in
	// the lateral scan: ssh, web, Docker API, databases, caches, admin UIs.
	DefaultPorts = []int{22, 80, 443, 2375, 2376, 3306, 5432, 6379, 8080, 9090}
	// DefaultHosts are the gateway of every default route and docker0's
	// usual address.
	DefaultHosts = []string{HostGateway, "172.17.0.1"}
	// DefaultDirect are a public HTTPS address and a public resolver;
	// users pass their own with --direct.
	DefaultDirect = []string{"1.1.1.1:443", "8.8.8.8:53"}
)

const (
	// HostGateway in Options.Hosts stands for the gateway of every
	// default route: on Docker, the host's address on the agent's bridge.
	HostGateway = "gateway"
	// LateralAuto in Options.Lateral scans the agent's own subnet, at
	// most the /24 around its address.
	LateralAuto = "auto"
	// DefaultDeniedName is the ungranted name the probe asks for; the
	// .invalid TLD (RFC 2606) can never be granted by accident.
	DefaultDeniedName = "egressd-probe.invalid"

	defaultTimeout     = time.Second
	defaultDNSTimeout  = 2 * time.Second
	defaultConcurrency = 256
	maxLateralHosts    = 256
	maxConcurrency     = 1024
)

// Options lists everything the probe checks. Empty fields skip a check.
type Options struct {
	Proxy string   // egressd's proxy URL, "http://IP:3128"; "" skips the proxy checks
	DNS   []string // servers ("ip:port") that must answer NXDOMAIN for DeniedName quickly
	Admin string   // egressd's admin listener ("ip:port"), which must be unreachable; "" skips

	Hosts  []string // host addresses: IP literals or HostGateway
	Ports  []int    // ports tried on Hosts and in the lateral scan; nil = DefaultPorts
	Direct []string // "ip:port" targets that must be unreachable without the proxy; port 53 also gets a UDP query

	DeniedName string // a name the policy does not grant; "" = DefaultDeniedName
	Lateral    string // CIDR to scan for other hosts, LateralAuto, or "" to skip
	Bridge     string // the agent network's bridge on the host, for fix text; "" = "<bridge>"

	Timeout     time.Duration // per TCP attempt; 0 = 1s
	DNSTimeout  time.Duration // per DNS query and proxy exchange; slower is a failure; 0 = 2s
	Concurrency int           // parallel attempts; 0 = 256

	RouteFile  string   // "" = /proc/net/route
	Route6File string   // "" = /proc/net/ipv6_route
	ARPFile    string   // "" = /proc/net/arp (the lateral scan's neighbour table)
	Dial       DialFunc // nil = net.Dialer
}

// plan is Options validated and with defaults applied.
type plan struct {
	Options
	proxy   *url.URL
	hosts   []netip.Addr // explicit IP literals
	ports   []int
	direct  []netip.AddrPort
	dns     []netip.AddrPort
	lateral netip.Prefix  // invalid: skip or auto
	sem     chan struct{} // bounds concurrent attempts across all checks
}

func newPlan(o Options) (*plan, error) {
	p := &plan{Options: o, ports: o.Ports}
	if p.ports == nil {
		p.ports = DefaultPorts
	}
	if len(p.ports) == 0 {
		return nil, fmt.Errorf("ports: empty; nil means the defaults")
	}
	for _, port := range p.ports {
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("port %d: not in 1..65535", port)
		}
	}
	p.DeniedName = cmpOr(p.DeniedName, DefaultDeniedName)
	p.Bridge = cmpOr(p.Bridge, "<bridge>")
	p.Timeout = cmpOr(p.Timeout, defaultTimeout)
	p.DNSTimeout = cmpOr(p.DNSTimeout, defaultDNSTimeout)
	p.Concurrency = min(cmpOr(p.Concurrency, defaultConcurrency), maxConcurrency)
	p.sem = make(chan struct{}, p.Concurrency)
	p.RouteFile = cmpOr(p.RouteFile, "/proc/net/route")
	p.Route6File = cmpOr(p.Route6File, "/proc/net/ipv6_route")
	p.ARPFile = cmpOr(p.ARPFile, "/proc/net/arp")
	if _, err := buildQuery(0, p.DeniedName, typeA); err != nil {
		return nil, fmt.Errorf("denied name: %w", err)
	}
	if err := p.parseTargets(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *plan) parseTargets() error {
	if p.Proxy != "" {
		u, err := url.Parse(p.Proxy)
		if err != nil || u.Scheme != "http" || u.Port() == "" || u.Hostname() == "" {
			return fmt.Errorf("proxy %q: want http://host:port", p.Proxy)
		}
		p.proxy = u
	}
	for _, h := range p.Hosts {
		if h == HostGateway {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			return fmt.Errorf("host %q: want an IP address or %q: %w", h, HostGateway, err)
		}
		p.hosts = append(p.hosts, a)
	}
	var err error
	if p.direct, err = parseAddrPorts("direct", p.Direct); err != nil {
		return err
	}
	if p.dns, err = parseAddrPorts("dns", p.DNS); err != nil {
		return err
	}
	if p.Admin != "" {
		if _, err := parseAddrPorts("admin", []string{p.Admin}); err != nil {
			return err
		}
	}
	if p.Lateral != "" && p.Lateral != LateralAuto {
		pfx, err := netip.ParsePrefix(p.Lateral)
		if err != nil {
			return fmt.Errorf("lateral %q: want a CIDR or %q: %w", p.Lateral, LateralAuto, err)
		}
		if pfx = pfx.Masked(); !pfx.Addr().Is4() || pfx.Bits() < 24 {
			return fmt.Errorf("lateral %s: scans at most an IPv4 /24 (%d addresses)", pfx, maxLateralHosts)
		}
		p.lateral = pfx
	}
	return nil
}

func parseAddrPorts(what string, in []string) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(in))
	for _, s := range in {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("%s %q: want ip:port (an IP literal, so the probe itself needs no DNS)", what, s)
		}
		out = append(out, ap)
	}
	return out, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Run performs every check in o and returns the report. It returns an
// error only for invalid Options; what the network does is in the report.
// It ends when all checks have, each bounded by its timeout, or when ctx
// ends.
func Run(ctx context.Context, o Options) (*Report, error) {
	p, err := newPlan(o)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c := &collector{}
	gateways := p.checkRoutes(c)

	var wg sync.WaitGroup
	wg.Go(func() { p.checkProxy(ctx, c) })
	wg.Go(func() { p.checkDNS(ctx, c) })
	wg.Go(func() { p.checkAdmin(ctx, c) })
	wg.Go(func() { p.checkDirect(ctx, c) })
	wg.Go(func() { p.checkHosts(ctx, c, gateways) })
	wg.Go(func() { p.checkLateral(ctx, c, gateways) })
	wg.Wait()

	rep := &Report{Results: c.results, Duration: time.Since(start)}
	rep.sort()
	return rep, nil
}

// collector gathers results from concurrent checks.
type collector struct {
	mu      sync.Mutex
	results []Result
}

func (c *collector) add(r Result) {
	c.mu.Lock()
	c.results = append(c.results, r)
	c.mu.Unlock()
}

// portList renders ports for a detail column.
func portList(ports []int) string {
	s := ""
	for i, p := range ports {
		if i > 0 {
			s += ","
		}
		s += strconv.Itoa(p)
	}
	return s
}
