package probe

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// checkRoutes reports the default routes and returns the gateways, which
// HostGateway stands for.
func (p *plan) checkRoutes(c *collector) []netip.Addr {
	var gws []netip.Addr
	r4, err := readRoutes(p.RouteFile, DefaultRoutes4)
	switch {
	case err != nil:
		c.add(Result{Check: CheckRoute, Target: p.RouteFile, Status: Info, Detail: "cannot read: " + err.Error()})
	case len(r4) == 0:
		c.add(Result{Check: CheckRoute, Target: "0.0.0.0/0", Status: Pass, Detail: "no IPv4 default route"})
	}
	for _, rt := range r4 {
		c.add(Result{Check: CheckRoute, Target: "0.0.0.0/0", Status: Info,
			Detail: fmt.Sprintf("via %s dev %s: usually the host's address on this network (probed under host)", addrOrOnLink(rt.Gateway), rt.Iface)})
		if rt.Gateway.IsValid() {
			gws = append(gws, rt.Gateway)
		}
	}
	r6, err := readRoutes(p.Route6File, DefaultRoutes6)
	switch {
	case err != nil:
		c.add(Result{Check: CheckRoute6, Target: p.Route6File, Status: Info, Detail: "cannot read (no IPv6?): " + err.Error()})
	case len(r6) == 0:
		c.add(Result{Check: CheckRoute6, Target: "::/0", Status: Pass, Detail: "no IPv6 default route"})
	}
	for _, rt := range r6 {
		c.add(Result{Check: CheckRoute6, Target: "::/0", Status: Info,
			Detail: fmt.Sprintf("via %s dev %s: IPv6 paths exist; pass IPv6 --direct targets to test them", addrOrOnLink(rt.Gateway), rt.Iface)})
		if rt.Gateway.IsValid() {
			gws = append(gws, rt.Gateway)
		}
	}
	return gws
}

func addrOrOnLink(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "on-link"
}

// scan tries every (addr, port) pair, at most p.Concurrency at a time
// across the whole probe.
func (p *plan) scan(ctx context.Context, addrs []netip.Addr, ports []int) map[netip.AddrPort]Reach {
	out := make(map[netip.AddrPort]Reach, len(addrs)*len(ports))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		for _, port := range ports {
			ap := netip.AddrPortFrom(a, uint16(port))
			select {
			case p.sem <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return out
			}
			wg.Go(func() {
				defer func() { <-p.sem }()
				r, _ := TCP(ctx, p.Dial, ap.String(), p.Timeout)
				mu.Lock()
				out[ap] = r
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// byOutcome splits one address's ports into those that connected and those
// that were refused.
func byOutcome(res map[netip.AddrPort]Reach, a netip.Addr, ports []int) (open, refused []int) {
	for _, port := range ports {
		switch res[netip.AddrPortFrom(a, uint16(port))] {
		case Connected:
			open = append(open, port)
		case Refused:
			refused = append(refused, port)
		}
	}
	return open, refused
}

// checkHosts probes the host's addresses. A connection is a hole; so is a
// refusal, because it shows the host's network stack answers this network:
// any port not in the list, or a service started tomorrow, is reachable.
func (p *plan) checkHosts(ctx context.Context, c *collector, gateways []netip.Addr) {
	var hosts []netip.Addr
	for _, h := range p.Hosts {
		if h == HostGateway {
			hosts = append(hosts, gateways...)
		}
	}
	hosts = uniqueAddrs(append(hosts, p.hosts...))
	res := p.scan(ctx, hosts, p.ports)
	fix := fmt.Sprintf("on the host, as root: egressd hostwall --bridge %s --apply (Engine 28+: also gateway_mode_ipv4: isolated)", p.Bridge)
	for _, h := range hosts {
		open, refused := byOutcome(res, h, p.ports)
		r := Result{Check: CheckHost, Target: h.String(), Status: Pass,
			Detail: fmt.Sprintf("no answer on %s", portList(p.ports))}
		switch {
		case len(open) > 0:
			r.Status, r.Fix = Hole, fix
			r.Detail = fmt.Sprintf("connected on %s", portList(open))
		case len(refused) > 0:
			r.Status, r.Fix = Hole, fix
			r.Detail = fmt.Sprintf("host answers (refused on %s): any service it runs is reachable", portList(refused))
		}
		c.add(r)
	}
}

func uniqueAddrs(in []netip.Addr) []netip.Addr {
	seen := make(map[netip.Addr]bool, len(in))
	out := in[:0]
	for _, a := range in {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// checkDirect tries each --direct target without the proxy. Any answer,
// even a refusal, means packets leave the agent's network.
func (p *plan) checkDirect(ctx context.Context, c *collector) {
	var wg sync.WaitGroup
	for _, ap := range p.direct {
		wg.Go(func() {
			r, _ := TCP(ctx, p.Dial, ap.String(), p.Timeout)
			res := Result{Check: CheckDirect, Target: ap.String(), Status: Pass, Detail: "tcp " + r.String()}
			if r.Answered() {
				res.Status = Hole
				res.Detail = "tcp " + r.String() + ": packets leave this network without egressd"
				res.Fix = "put the agent only on a network with internal: true, and egressd as its only other member"
			}
			c.add(res)
		})
		if ap.Port() == 53 {
			wg.Go(func() { p.checkDirectDNS(ctx, c, ap) })
		}
	}
	wg.Wait()
}

func (p *plan) checkDirectDNS(ctx context.Context, c *collector, ap netip.AddrPort) {
	ctx, cancel := context.WithTimeout(ctx, p.DNSTimeout)
	defer cancel()
	ans, err := LookupA(ctx, p.Dial, ap.String(), p.DeniedName)
	res := Result{Check: CheckDirectDNS, Target: ap.String(), Status: Pass, Detail: "udp: no answer"}
	if err == nil {
		res.Status = Hole
		res.Detail = "udp: answered " + RcodeName(ans.Rcode) + ": DNS leaves this network without egressd"
		res.Fix = "put the agent only on a network with internal: true; its dns: must be egressd"
	}
	c.add(res)
}

// checkAdmin: egressd's admin listener must not be reachable from here.
func (p *plan) checkAdmin(ctx context.Context, c *collector) {
	if p.Admin == "" {
		return
	}
	r, _ := TCP(ctx, p.Dial, p.Admin, p.Timeout)
	res := Result{Check: CheckAdmin, Target: p.Admin, Status: Pass, Detail: "tcp " + r.String()}
	if r == Connected {
		res.Status = Hole
		res.Detail = "admin listener reachable from the agent's network"
		res.Fix = "bind listen.admin to 127.0.0.1 and use docker compose exec egressd egressd status"
	}
	c.add(res)
}

// checkDNS asks each server for the ungranted name: the answer must be
// NXDOMAIN, and fast, because a timeout stalls the agent and an address
// would be a leak.
func (p *plan) checkDNS(ctx context.Context, c *collector) {
	var wg sync.WaitGroup
	for _, srv := range p.dns {
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, p.DNSTimeout)
			defer cancel()
			ans, err := LookupA(qctx, p.Dial, srv.String(), p.DeniedName)
			c.add(dnsResult(srv.String(), p.DeniedName, ans, err))
		})
	}
	wg.Wait()
}

func dnsResult(srv, name string, ans Answer, err error) Result {
	r := Result{Check: CheckDNS, Target: srv}
	switch {
	case err != nil:
		r.Status, r.Detail = Fail, fmt.Sprintf("%s: no answer: %v", name, err)
		r.Fix = "point the agent's dns: at egressd's IP and check listen.dns"
	case len(ans.Addrs) > 0:
		r.Status, r.Detail = Hole, fmt.Sprintf("%s resolved to %v", name, ans.Addrs)
		r.Fix = "the agent's DNS answers ungranted names: set its dns: to egressd only"
	case ans.Rcode == RcodeNXDomain:
		r.Status, r.Detail = Pass, fmt.Sprintf("%s: NXDOMAIN in %s", name, ans.RTT.Round(time.Millisecond))
	default:
		r.Status, r.Detail = Fail, fmt.Sprintf("%s: %s without addresses, want NXDOMAIN", name, RcodeName(ans.Rcode))
		r.Fix = "point the agent's dns: at egressd so ungranted names fail fast"
	}
	return r
}

// checkProxy: the proxy answers, and refuses the ungranted name with 403
// and egressd's reason header, over plain HTTP and CONNECT.
func (p *plan) checkProxy(ctx context.Context, c *collector) {
	if p.proxy == nil {
		return
	}
	r, err := TCP(ctx, p.Dial, p.proxy.Host, p.Timeout)
	if r != Connected {
		c.add(Result{Check: CheckProxy, Target: p.proxy.Host, Status: Fail, Detail: fmt.Sprintf("tcp %s: %v", r, err),
			Fix: "the agent cannot reach egressd: check both are on the agent network and listen.proxy"})
		return
	}
	c.add(Result{Check: CheckProxy, Target: p.proxy.Host, Status: Pass, Detail: "reachable"})
	resp, err := p.proxyGet(ctx)
	c.add(denyResult("http://"+p.DeniedName+"/", resp, err))
	resp, err = p.proxyConnect(ctx)
	c.add(denyResult("CONNECT "+p.DeniedName+":443", resp, err))
}

// denyResult turns a proxy exchange into a report line.
func denyResult(target string, resp *http.Response, err error) Result {
	r := Result{Check: CheckProxyDeny, Target: target}
	switch {
	case err != nil:
		r.Status, r.Detail = Fail, err.Error()
		r.Fix = "egressd's proxy did not answer: check it is running (docker compose logs egressd)"
	case resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-Egressd-Reason") != "":
		r.Status, r.Detail = Pass, "403 "+resp.Header.Get("X-Egressd-Reason")
	case resp.StatusCode == http.StatusForbidden:
		r.Status, r.Detail = Fail, "403 without X-Egressd-Reason: is this egressd?"
		r.Fix = "point --proxy at egressd's proxy listener"
	default:
		r.Status, r.Detail = Hole, fmt.Sprintf("%s: the proxy did not refuse an ungranted name", resp.Status)
		r.Fix = "run egressd with mode: enforce, and point the agent's HTTP(S)_PROXY at it"
	}
	return r
}

func (p *plan) proxyGet(ctx context.Context) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.DNSTimeout)
	defer cancel()
	tr := &http.Transport{Proxy: http.ProxyURL(p.proxy), DialContext: p.Dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.DeniedName+"/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func (p *plan) proxyConnect(ctx context.Context) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.DNSTimeout)
	defer cancel()
	dial := p.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", p.proxy.Host)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	target := p.DeniedName + ":443"
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return nil, err
	}
	req := &http.Request{Method: http.MethodConnect}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, fmt.Errorf("reading the CONNECT answer: %w", err)
	}
	resp.Body.Close()
	return resp, nil
}

// isEgressd reports whether a is one of egressd's addresses as given in
// Options, so the lateral list can label it.
func (p *plan) isEgressd(a netip.Addr) bool {
	if p.proxy != nil && p.proxy.Hostname() == a.String() {
		return true
	}
	if ap, err := netip.ParseAddrPort(p.Admin); err == nil && ap.Addr() == a {
		return true
	}
	for _, d := range p.dns {
		if d.Addr() == a {
			return true
		}
	}
	return false
}
