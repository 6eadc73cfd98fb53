package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// TestSharedResolverRebinding runs the proxy on egressd's own resolver
// against an in-process DNS server whose answer for rebind.test turns
// private after the first query: the first request reaches the loopback
// upstream, the second (after the cached answer expired, with no pooled
// connection left to reuse) is denied.
func TestSharedResolverRebinding(t *testing.T) {
	var queries atomic.Int32
	dnsUp := resolvertest.Start(t, func(_ string, q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA && q.Question[0].Name == "rebind.test." {
			ip := "127.0.0.1"
			if queries.Add(1) > 1 {
				ip = "10.0.0.1"
			}
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
				A:   net.ParseIP(ip),
			})
		}
		return m
	})
	clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	res := resolver.New(resolver.Config{Upstreams: []string{dnsUp.Addr}, Timeout: time.Second, Clock: clock.Now})
	up := newUpstream(t, false, nil)
	e := startProxy(t, func(int) string {
		return "version: 1\nallow:\n  - {host: rebind.test, ports: " + ports(up.port) + "}\n" +
			"networks:\n  allow: [127.0.0.0/8]\n"
	}, func(c *Config) { c.Resolver = res })

	target := "rebind.test:" + strconv.Itoa(up.port)
	resp, body := e.roundTrip(getReq("http://"+target+"/", target))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %d %q, want 200", resp.StatusCode, body)
	}
	clock.Advance(time.Minute) // past the cached answer's TTL (and min_ttl)
	e.dropPooled()             // else the request may reuse the checked connection
	checkDenied(t, e, denyCase{"rebound", getReq("http://"+target+"/", target), 403,
		vocab.ReasonPrivateAddress, "rebind.test", "private"})
	if n := up.count(); n != 1 {
		t.Errorf("upstream requests: got %d, want 1", n)
	}
	if n := queries.Load(); n != 2 {
		t.Errorf("A queries: got %d, want 2 (one per request, none between check and dial)", n)
	}
}

// cachingResolver answers some names from a "cache" (LookupCached) and
// counts how often it is asked.
type cachingResolver struct {
	*fakeResolver
	cached map[string][]netip.Addr
}

func (r cachingResolver) LookupCached(host string) ([]netip.Addr, bool, error) {
	a, ok := r.cached[host]
	return a, ok, nil
}

// TestCachedLookup: a name the resolver holds in its cache is answered
// from there without asking, and its addresses are checked like any
// others; a name it does not hold is asked for.
func TestCachedLookup(t *testing.T) {
	var res cachingResolver
	f := newFixture(t, fixOpts{mod: func(c *Config) {
		res = cachingResolver{c.Resolver.(*fakeResolver), map[string][]netip.Addr{
			"granted.test":   {netip.MustParseAddr("127.0.0.1")},
			"private.b.test": {netip.MustParseAddr("10.9.9.9")},
		}}
		c.Resolver = res
	}})
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "cached")
	if n := res.callCount("granted.test"); n != 0 {
		t.Errorf("cached name: asked %d times, want 0", n)
	}
	checkDenied(t, f.env, denyCase{"cached private", connectReq(f.ep("private.b.test")), 403,
		vocab.ReasonPrivateAddress, "private.b.test", "private"})
	c, br = f.connect(f.ep("other.test"))
	echo(t, c, br, "asked")
	if n := res.callCount("other.test"); n != 1 {
		t.Errorf("name not cached: asked %d times, want 1", n)
	}
}
