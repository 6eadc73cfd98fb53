package dnsfilter

import (
	"net"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
)

// checker decides whether an address may appear in an answer.
type checker struct {
	p    *policy.Policy
	self *safedial.SelfSet
}

// check is CheckAddr plus egressd's own addresses, which are never
// answered: the agent must not be pointed at egressd under another name.
func (c checker) check(a netip.Addr) policy.Decision {
	a = a.Unmap()
	if c.self.ContainsAddr(a) {
		return policy.Decision{Verdict: vocab.Deny, Reason: vocab.ReasonSelfAddress}
	}
	return c.p.CheckAddr(a)
}

// filtered summarises what filterAnswer did to an answer.
type filtered struct {
	had, kept int             // A/AAAA records at the chain's end, before and after
	refused   policy.Decision // CheckAddr's answer for the first address removed
}

// filterAnswer rewrites m (which the caller owns) to what the agent may
// see: the CNAME chain from the question name, in order, then the records
// of the asked type at the chain's end, minus every address CheckAddr
// refuses (private, special, metadata, networks.deny) and egressd's own
// addresses. HTTPS and SVCB records lose the address hints refused the
// same way. Records off the chain
// and the additional section are dropped; the authority section keeps only
// its SOA, which clients need for negative caching. ok is false when the
// chain loops.
func filterAnswer(c checker, m *dns.Msg, q dns.Question) (f filtered, ok bool) {
	end, ok := resolver.ChainEnd(m.Answer, q.Name)
	if !ok {
		return f, false
	}
	out := make([]dns.RR, 0, len(m.Answer))
	out = appendChain(out, m.Answer, q.Name)
	if q.Qtype != dns.TypeCNAME {
		for _, rr := range m.Answer {
			h := rr.Header()
			if h.Rrtype != q.Qtype || !strings.EqualFold(h.Name, end) {
				continue
			}
			if keepRecord(c, rr, &f) {
				out = append(out, rr)
			}
		}
	}
	m.Answer = out
	ns := m.Ns[:0]
	for _, rr := range m.Ns {
		if rr.Header().Rrtype == dns.TypeSOA {
			ns = append(ns, rr)
		}
	}
	m.Ns, m.Extra = ns, nil
	return f, true
}

// appendChain appends the CNAME records from name to the chain's end, in
// chain order. The chain is known not to loop.
func appendChain(out, answer []dns.RR, name string) []dns.RR {
	for {
		var next *dns.CNAME
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = c
				break
			}
		}
		if next == nil {
			return out
		}
		out = append(out, next)
		name = next.Target
	}
}

// keepRecord reports whether rr (of the asked type, at the chain's end)
// stays in the answer, pruning HTTPS/SVCB hints on the way.
func keepRecord(c checker, rr dns.RR, f *filtered) bool {
	switch v := rr.(type) {
	case *dns.A, *dns.AAAA:
		f.had++
		a, ok := resolver.RRAddr(rr)
		if !ok {
			return false
		}
		if d := c.check(a); !d.Verdict.Allowed() {
			if f.refused.Reason == vocab.ReasonNone {
				f.refused = d // CheckAddr denials always carry a reason
			}
			return false
		}
		f.kept++
	case *dns.HTTPS:
		pruneHints(c, &v.SVCB)
	case *dns.SVCB:
		pruneHints(c, v)
	}
	return true
}

// pruneHints removes ipv4hint/ipv6hint addresses check refuses, and a
// hint key left empty. Clients then fall back to A/AAAA, which are
// filtered the same way.
func pruneHints(c checker, rr *dns.SVCB) {
	vals := rr.Value[:0]
	for _, kv := range rr.Value {
		switch h := kv.(type) {
		case *dns.SVCBIPv4Hint:
			if h.Hint = allowedIPs(c, h.Hint); len(h.Hint) == 0 {
				continue
			}
		case *dns.SVCBIPv6Hint:
			if h.Hint = allowedIPs(c, h.Hint); len(h.Hint) == 0 {
				continue
			}
		}
		vals = append(vals, kv)
	}
	rr.Value = vals
}

func allowedIPs(c checker, ips []net.IP) []net.IP {
	out := ips[:0]
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if ok && c.check(a).Verdict.Allowed() {
			out = append(out, ip)
		}
	}
	return out
}
