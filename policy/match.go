package policy

import (
	"net/netip"
	"slices"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Matching semantics (the README documents the same):
//
//   - host: api.example.com matches that name only; case and one trailing
//     dot are ignored and internationalised names match their punycode.
//   - host: "*.example.com" matches every name below example.com at any
//     depth (a.example.com, a.b.example.com), never example.com itself and
//     never evilexample.com or example.com.evil.net.
//   - A request is allowed when any rule matching its host grants its port.
//     Rules are tried most specific first (the exact name, then wildcards
//     from the longest suffix to the shortest); the first that grants the
//     port is the Decision's Rule. When rules match the host but none grants
//     the port, the most specific one is reported with port_not_allowed.
//   - IP-literal targets never match host rules; a cidr rule must cover the
//     address (longest prefix first, same port logic) and CheckAddr must
//     accept it.
//   - DNS ignores ports: a name granted on any port is answered.
//   - Provider upstream hosts are reserved for the gateway: HTTP, CONNECT
//     and DNS for them are denied with use_gateway even when allow-listed.
//     The gateway dials and resolves them itself, so the agent never needs
//     their addresses; denying DNS too stops a configured key-bearing
//     route from being bypassed with the agent's own credentials.

// Decide answers whether req may proceed. Pure: no I/O, no clock, and no
// allocation when req.Host is already canonical (lowercase ASCII) or an IP
// literal. It does not resolve names; callers classify each resolved
// address with CheckAddr.
//
// In report mode, denials for allow-list reasons (not_allowlisted,
// port_not_allowed, ip_literal_not_allowed, use_gateway) come back with
// Verdict Report; address denials (private, metadata, denied network) and
// malformed requests are never relaxed.
//
// With ask: on, an askable denial (ask.reasons) is looked up in the
// Overlay of the operator's answers: a grant allows it, a remembered deny
// turns it into operator_denied.
func (p *Policy) Decide(req Request) Decision {
	d := p.decide(req)
	if d.Verdict == vocab.Deny && p.overlay != nil && p.Askable(d.Reason) && req.Proto != vocab.ProtoGateway {
		d = p.overlay.decide(req, d)
	}
	if p.report && d.Verdict == vocab.Deny && relaxable(d.Reason) {
		d.Verdict = vocab.Report
	}
	return d
}

func relaxable(r vocab.Reason) bool {
	switch r {
	case vocab.ReasonNotAllowlisted, vocab.ReasonPortNotAllowed, vocab.ReasonIPLiteralNotAllowed, vocab.ReasonUseGateway:
		return true
	}
	return false
}

func (p *Policy) decide(req Request) Decision {
	name, ip, prob := normalizeHost(req.Host)
	if prob != hostOK {
		if req.Proto == vocab.ProtoDNS && prob == hostBadIPLiteral {
			return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted}
		}
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest}
	}
	if req.Proto > vocab.ProtoGateway {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest}
	}
	if req.Port == 0 && (req.Proto == vocab.ProtoHTTP || req.Proto == vocab.ProtoConnect) {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest}
	}
	if ip.IsValid() {
		if req.Proto == vocab.ProtoDNS {
			// A query for a name that is an address: nothing to answer.
			return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted}
		}
		return p.decideIP(ip, req)
	}
	if r := p.provHosts[name]; r != nil {
		if req.Proto == vocab.ProtoGateway {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
		}
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonUseGateway, Rule: r}
	}
	if req.Proto == vocab.ProtoGateway {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted}
	}
	return p.decideName(name, req)
}

// decideName walks the candidate rules for name, most specific first,
// without allocating: the exact map, then each proper suffix in the
// wildcard map.
func (p *Policy) decideName(name string, req Request) Decision {
	var first *Rule
	if p.exactLens.has(len(name)) {
		if r := p.exact[name]; r != nil {
			if req.Proto == vocab.ProtoDNS || r.grants(req.Port) {
				return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
			}
			first = r
		}
	}
	if len(p.wild) > 0 {
		// A wildcard suffix starts after a dot at i with len(name)-i-1 a
		// length some wildcard has; only positions in the window of
		// those lengths can qualify, so long names cost no more than
		// short ones.
		for i := max(0, len(name)-p.wildMax-1); i < len(name)-p.wildMin; i++ {
			if name[i] != '.' || !p.wildLens.has(len(name)-i-1) {
				continue
			}
			r := p.wild[name[i+1:]]
			if r == nil {
				continue
			}
			if req.Proto == vocab.ProtoDNS || r.grants(req.Port) {
				return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
			}
			if first == nil {
				first = r
			}
		}
	}
	if first != nil {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonPortNotAllowed, Rule: first}
	}
	return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted}
}

// decideIP handles IP-literal targets: the address check first (never
// relaxed, and the more useful reason for a private literal), then the
// gateway reservation, then cidr rules.
//
// For ProtoGateway only the configured upstreams are allowed, and an
// upstream written as an IP literal is allowed even when special (the
// operator chose it, e.g. a loopback test server or a LAN model server).
func (p *Policy) decideIP(ip netip.Addr, req Request) Decision {
	r := p.provIPs[ip]
	if req.Proto == vocab.ProtoGateway {
		if r != nil && Classify(ip) != ClassMetadata {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
		}
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted}
	}
	if d := p.CheckAddr(ip); d.Verdict == vocab.Deny {
		return d
	}
	if r != nil {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonUseGateway, Rule: r}
	}
	var first *Rule
	for _, l := range p.cidr.lensFor(ip) {
		pfx, _ := ip.Prefix(l)
		r := p.cidr.m[pfx]
		if r == nil {
			continue
		}
		if r.grants(req.Port) {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
		}
		if first == nil {
			first = r
		}
	}
	if first != nil {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonPortNotAllowed, Rule: first}
	}
	return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonIPLiteralNotAllowed}
}

func (r *Rule) grants(port uint16) bool {
	return slices.Contains(r.Ports, port)
}

// QTypeAllowed reports whether DNS answers queries of this type (numeric
// RR type, as on the wire), per dns.qtypes.
func (p *Policy) QTypeAllowed(qtype uint16) bool {
	return p.qtypes[qtype>>6]&(1<<(qtype&63)) != 0
}

// addWild indexes a wildcard rule under its suffix.
func (p *Policy) addWild(suffix string, r *Rule) {
	if p.wild == nil {
		p.wild = make(map[string]*Rule)
	}
	if len(p.wild) == 0 || len(suffix) < p.wildMin {
		p.wildMin = len(suffix)
	}
	p.wildMax = max(p.wildMax, len(suffix))
	p.wild[suffix] = r
	p.wildLens.add(len(suffix))
}

// lenSet is a set of name lengths (0-255), to skip map lookups for suffix
// lengths no wildcard has.
type lenSet [4]uint64

func (s *lenSet) add(n int)      { s[n>>6&3] |= 1 << (n & 63) }
func (s *lenSet) has(n int) bool { return n < 256 && s[n>>6]&(1<<(n&63)) != 0 }
