//go:build hardening

package hardening

import (
	"testing"
	"time"
)

// wall is an egressd with the bypass-catalogue policy, its fake DNS, an
// HTTP upstream and a raw TCP upstream, both on upstreamIP with traps on
// their ports everywhere else.
type wall struct {
	e    *proc
	pol  policyFile // as written at start
	dns  *fakeDNS
	web  *web
	echo *echo
}

// Names the wall's DNS answers, and what they point at.
var wallRecords = []string{
	"granted.test. 60 IN A " + upstreamIP,
	"ungranted.test. 60 IN A " + upstreamIP,
	"loop.test. 60 IN A 127.0.0.1",
	"meta.test. 60 IN A 169.254.169.254",
	"ten.test. 60 IN A 10.0.0.1",
	"trap.test. 60 IN A " + trapIP,
	"mapped.test. 60 IN AAAA ::ffff:127.0.0.1",
	"nat64.test. 60 IN AAAA 64:ff9b::a9fe:a9fe",
	"sixtofour.test. 60 IN AAAA 2002:a9fe:a9fe::",
	"teredo.test. 60 IN AAAA 2001:0:4136:e378:8000:63bf:5601:5601",
	"v6loop.test. 60 IN AAAA ::1",
	"mixed.test. 60 IN A " + upstreamIP,
	"mixed.test. 60 IN A 10.0.0.1",
	"cname.test. 60 IN CNAME loop.test.",
}

// grantedNames are allow-listed on every test port: the names themselves
// pass Decide, so only the address checks stand between them and a dial.
var grantedNames = []string{
	"granted.test", "loop.test", "meta.test", "ten.test", "trap.test", "mapped.test",
	"nat64.test", "sixtofour.test", "teredo.test", "v6loop.test", "mixed.test",
	"cname.test", "rebind.test", "missing.test",
}

func startWall(t testing.TB, tweak ...func(*policyFile)) *wall {
	t.Helper()
	w := &wall{dns: startDNS(t), web: startWeb(t), echo: startEcho(t)}
	w.dns.add(t, wallRecords...)
	w.dns.addRebind("rebind.test", upstreamIP, trapIP)
	ports := []int{w.web.port, w.echo.port, 80, 443}
	pol := policyFile{
		DNS: []string{w.dns.up.Addr},
		// TTL 0 answers are cached for 1ns, so every lookup of a rebinding
		// name asks upstream (the resolver reads min_ttl 0 as its 5s default).
		MinTTL:   time.Nanosecond,
		NetAllow: []string{upstreamIP + "/32"},
		Allow:    []rule{{CIDR: upstreamIP + "/32", Ports: ports[:2]}},
		MaxPer:   4096,
		MaxConns: 8192,
		// Cases send many requests to a few hosts; token buckets are
		// opened so no case is answered rate_limited by accident
		// (TestRateLimitedFlood turns them back on).
		Unlimited: true,
	}
	for _, n := range grantedNames {
		pol.Allow = append(pol.Allow, rule{Host: n, Ports: ports})
	}
	for _, f := range tweak {
		f(&pol)
	}
	w.pol = pol
	w.e = startEgressd(t, pol)
	return w
}

// noTrapHits fails if any trap listener saw a connection.
func (w *wall) noTrapHits(t testing.TB) {
	t.Helper()
	if n := w.web.traps.hits() + w.echo.traps.hits(); n != 0 {
		t.Errorf("trap listeners (127.0.0.1, %s, ::1 on the upstream ports) saw %d connections, want 0", trapIP, n)
	}
}

const logWait = 5 * time.Second
