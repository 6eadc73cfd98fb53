package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxChain bounds how many CNAME hops are followed, inside one answer and
// across follow-up queries, so a looping or absurd chain ends.
const maxChain = 8

// LookupNetIP resolves host to its IPv4 then IPv6 addresses, asking for A
// and AAAA concurrently through the same cache as Exchange, so the proxy
// dials exactly what the DNS server would answer. CNAME chains are followed
// inside each answer and, when an upstream stops half-way, by asking for
// the chain's end. IPv4-mapped IPv6 answers are unmapped, so callers
// classify the address that will really be reached. An IP literal is
// returned as is without a query. A name with no addresses gives an error
// wrapping ErrNotFound; if only one family fails upstream, the other's
// addresses are returned.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if addrs, ok, err := r.LookupCached(host); ok {
		return addrs, err
	}
	type result struct {
		addrs []netip.Addr
		err   error
	}
	six := make(chan result, 1)
	go func() {
		a, err := r.lookupType(ctx, host, dns.TypeAAAA)
		six <- result{a, err}
	}()
	v4, err4 := r.lookupType(ctx, host, dns.TypeA)
	res := <-six
	return joinFamilies(host, v4, err4, res.addrs, res.err)
}

// LookupCached is LookupNetIP for a name (not an IP literal) when both
// families' answers are cached and hold the end of their CNAME chains:
// read in place, without copying the messages or starting a goroutine, as
// every CONNECT and new upstream dial to a name the agent just looked up
// does. It never waits, so it takes no context. ok is false when either
// answer is missing or its chain goes on past it: LookupNetIP then asks.
func (r *Resolver) LookupCached(host string) (addrs []netip.Addr, ok bool, err error) {
	now := r.clock()
	name := dns.Fqdn(host)
	v4, err4, ok4 := r.cachedType(name, dns.TypeA, now)
	if !ok4 {
		return nil, false, nil
	}
	v6, err6, ok6 := r.cachedType(name, dns.TypeAAAA, now)
	if !ok6 {
		return nil, false, nil
	}
	addrs, err = joinFamilies(host, v4, err4, v6, err6)
	return addrs, true, err
}

// cachedType is lookupType's first hop read from the cache in place
// (entries are never changed once stored); ok is false when the answer is
// not cached or names a chain end it does not hold.
func (r *Resolver) cachedType(name string, qtype uint16, now time.Time) ([]netip.Addr, error, bool) {
	k, err := makeKey(name, qtype)
	if err != nil {
		return nil, nil, false
	}
	e := r.cache.get(k, now)
	if e == nil {
		return nil, nil, false
	}
	// A family without addresses is the bare ErrNotFound: joinFamilies
	// names the host if the other family has none either, and when it has
	// some (an IPv4-only name on every CONNECT) nothing was formatted.
	m := e.msg
	end, ok := ChainEnd(m.Answer, name)
	if !ok {
		return nil, ErrNotFound, true
	}
	if addrs := Addrs(m.Answer, end, qtype); len(addrs) > 0 {
		return addrs, nil, true
	}
	if m.Rcode != dns.RcodeSuccess || strings.EqualFold(end, name) {
		return nil, ErrNotFound, true
	}
	return nil, nil, false
}

// joinFamilies is LookupNetIP's answer from its two lookups: the IPv4
// then IPv6 addresses, else the upstream failure, else not found.
func joinFamilies(host string, v4 []netip.Addr, err4 error, v6 []netip.Addr, err6 error) ([]netip.Addr, error) {
	addrs := append(v4, v6...)
	if len(addrs) > 0 {
		return addrs, nil
	}
	// Prefer the upstream failure over "not found": it is the real cause.
	for _, err := range []error{err4, err6} {
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, host)
}

// lookupType returns the addresses of one type at the end of host's CNAME
// chain.
func (r *Resolver) lookupType(ctx context.Context, host string, qtype uint16) ([]netip.Addr, error) {
	name := dns.Fqdn(host)
	for range maxChain {
		m, err := r.Exchange(ctx, name, qtype)
		if err != nil {
			return nil, err
		}
		end, ok := ChainEnd(m.Answer, name)
		if !ok {
			return nil, fmt.Errorf("%w: %s: cname loop", ErrNotFound, host)
		}
		if addrs := Addrs(m.Answer, end, qtype); len(addrs) > 0 {
			return addrs, nil
		}
		if m.Rcode != dns.RcodeSuccess || strings.EqualFold(end, name) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, host)
		}
		name = end // chain stops at a name the upstream did not resolve
	}
	return nil, fmt.Errorf("%w: %s: cname chain too long", ErrNotFound, host)
}

// ChainEnd follows the CNAME chain that starts at name within answer and
// returns the name at its end (name itself when there is no CNAME). Names
// compare case-insensitively. ok is false when the chain loops or is
// longer than maxChain hops. It does not allocate.
func ChainEnd(answer []dns.RR, name string) (end string, ok bool) {
	end = name
	for range maxChain + 1 {
		next, found := cnameOf(answer, end)
		if !found {
			return end, true
		}
		end = next
	}
	return end, false
}

func cnameOf(answer []dns.RR, owner string) (string, bool) {
	for _, rr := range answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
			return c.Target, true
		}
	}
	return "", false
}

// Addrs returns the addresses of type qtype (A or AAAA) owned by name in
// answer, unmapped.
func Addrs(answer []dns.RR, name string, qtype uint16) []netip.Addr {
	var out []netip.Addr
	for _, rr := range answer {
		if rr.Header().Rrtype != qtype || !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		if a, ok := RRAddr(rr); ok {
			out = append(out, a)
		}
	}
	return out
}

// RRAddr returns the address an A or AAAA record holds, unmapped.
func RRAddr(rr dns.RR) (netip.Addr, bool) {
	var a netip.Addr
	var ok bool
	switch v := rr.(type) {
	case *dns.A:
		a, ok = netip.AddrFromSlice(v.A.To4())
	case *dns.AAAA:
		a, ok = netip.AddrFromSlice(v.AAAA.To16())
	}
	return a.Unmap(), ok
}
