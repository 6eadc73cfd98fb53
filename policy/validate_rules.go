package policy

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
)

// allow checks each allow entry and indexes it: exact names in one map,
// wildcard suffixes in another, cidrs in a prefix table.
func (c *compiler) allow() {
	p := c.p
	p.rules = make([]Rule, len(p.cfg.Allow))
	p.exact = make(map[string]*Rule)
	p.wild = make(map[string]*Rule)
	where := map[string]int{} // canonical host or prefix → first index
	for i, a := range p.cfg.Allow {
		path := fmt.Sprintf("allow[%d]", i)
		r := &p.rules[i]
		r.Index = i
		ok := c.allowTarget(path, a, r)
		r.Ports = c.ports(path, a.Ports)
		if a.Rate != nil {
			c.rate(path+".rate", *a.Rate)
			rate := *a.Rate
			r.Rate = &rate
		}
		if !ok {
			continue
		}
		key := r.Host
		if key == "" {
			key = r.Prefix.String()
		}
		if j, dup := where[key]; dup {
			c.errf(path, "%s is already granted by allow[%d]; merge the two entries", key, j)
			continue
		}
		where[key] = i
		switch {
		case r.Host == "":
			p.cidr.add(r.Prefix, r)
		case strings.HasPrefix(r.Host, "*."):
			p.addWild(r.Host[2:], r)
		default:
			p.exact[r.Host] = r
			p.exactLens.add(len(r.Host))
		}
	}
}

// allowTarget checks that exactly one of host/cidr is set and parses it.
func (c *compiler) allowTarget(path string, a AllowRule, r *Rule) bool {
	switch {
	case a.Host != "" && a.CIDR != "":
		c.errf(path, "has both host: and cidr:; write one entry for each")
		return false
	case a.Host == "" && a.CIDR == "":
		c.errf(path, "needs host: or cidr:")
		return false
	case a.Host != "":
		canon, _, msg := parseHostPattern(a.Host)
		if msg != "" {
			c.errf(path+".host", "%q: %s", a.Host, msg)
			return false
		}
		r.Host = canon
	default:
		pfx, msg := parseCIDR(a.CIDR)
		if msg != "" {
			c.errf(path+".cidr", "%s", msg)
			return false
		}
		r.Prefix = pfx
	}
	return true
}

func (c *compiler) ports(path string, ports []int) []uint16 {
	out := make([]uint16, 0, len(ports))
	for j, n := range ports {
		if n < 1 || n > 65535 {
			c.errf(fmt.Sprintf("%s.ports[%d]", path, j), "%d: want 1-65535", n)
			continue
		}
		out = append(out, uint16(n))
	}
	return out
}

// networks checks networks.allow (never covering a metadata address) and
// networks.deny.
func (c *compiler) networks() {
	n := c.p.cfg.Networks
	for i, s := range n.Allow {
		path := fmt.Sprintf("networks.allow[%d]", i)
		pfx, msg := parseCIDR(s)
		if msg != "" {
			c.errf(path, "%s", msg)
			continue
		}
		if m, bad := coversMetadata(pfx); bad {
			c.errf(path, "%s contains the metadata address %s, which can never be allowed; split the range around it", pfx, m)
			continue
		}
		c.p.netAllow.add(pfx, struct{}{})
	}
	for i, s := range n.Deny {
		pfx, msg := parseCIDR(s)
		if msg != "" {
			c.errf(fmt.Sprintf("networks.deny[%d]", i), "%s", msg)
			continue
		}
		c.p.netDeny.add(pfx, struct{}{})
	}
}

func coversMetadata(p netip.Prefix) (netip.Addr, bool) {
	for _, m := range metadataAddrs() {
		if p.Contains(m) {
			return m, true
		}
	}
	return netip.Addr{}, false
}

// providers checks each gateway route and reserves its upstream host.
func (c *compiler) providers() {
	p := c.p
	p.provHosts = map[string]*Rule{}
	p.provIPs = map[netip.Addr]*Rule{}
	names := make([]string, 0, len(p.cfg.Providers))
	for name := range p.cfg.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	p.prov = make([]Rule, len(names))
	for i, name := range names {
		pc := p.cfg.Providers[name]
		path := joinKey("providers", name)
		if !plainKey(name) {
			c.errf(path, "provider names are served as /<name>/: use letters, digits, '-' and '_'")
		}
		switch pc.Format {
		case "openai", "anthropic":
		default:
			c.errf(path+".format", "%q: want openai or anthropic", pc.Format)
		}
		c.envName(path+".api_key_env", pc.APIKeyEnv)
		c.envName(path+".client_token_env", pc.ClientTokenEnv)
		if pc.APIKeyEnv != "" && pc.APIKeyEnv == pc.ClientTokenEnv {
			c.errf(path+".client_token_env", "must differ from api_key_env: the agent must never hold the real key")
		}
		if pc.CAFile != "" && !filepath.IsAbs(pc.CAFile) {
			c.errf(path+".ca_file", "%q: give an absolute path to a PEM bundle", pc.CAFile)
		}
		if pc.TokensPerMinute < 0 {
			c.errf(path+".tokens_per_minute", "%d: must not be negative", pc.TokensPerMinute)
		}
		c.providerExtras(path, pc)
		host, msg := upstreamHost(pc.Upstream)
		if msg != "" {
			c.errf(path+".upstream", "%q: %s", pc.Upstream, msg)
			continue
		}
		r := &p.prov[i]
		*r = Rule{Index: -1, Provider: name}
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			r.Prefix = hostPrefix(ip.Unmap())
			p.provIPs[ip.Unmap()] = r
			continue
		}
		r.Host = host
		p.provHosts[host] = r
	}
}

func (c *compiler) envName(path, v string) {
	switch {
	case v == "":
		c.errf(path, "required: the name of an environment variable")
	case !validEnvName(v):
		c.errf(path, "%q: not an environment variable name", v)
	}
}

// upstreamHost checks a provider upstream URL: https, or http only to a
// loopback host (in-process test servers), no credentials, query or
// fragment. It returns the canonical host.
func upstreamHost(s string) (string, string) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", "want a URL such as https://openrouter.ai/api"
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "no credentials, query or fragment in upstream URLs"
	}
	name, ip, prob := normalizeHost(u.Hostname())
	if prob != hostOK {
		return "", prob.String()
	}
	if p := u.Port(); p != "" {
		if _, msg := parsePort(p, false); msg != "" {
			return "", msg
		}
	}
	if ip.IsValid() && Classify(ip) == ClassMetadata {
		return "", "a cloud metadata address can never be an upstream"
	}
	loopback := name == "localhost" || (ip.IsValid() && ip.IsLoopback())
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback:
	case u.Scheme == "http":
		return "", "plain http is only allowed to loopback upstreams; use https://"
	default:
		return "", "scheme must be https"
	}
	if ip.IsValid() {
		return ip.String(), ""
	}
	return name, ""
}

func (c *compiler) budget() {
	b := &c.p.cfg.Budget
	switch b.Period {
	case "day", "week", "month", "total":
	default:
		c.errf("budget.period", "%q: want day, week, month or total", b.Period)
	}
	if !(b.WarnAt > 0 && b.WarnAt <= 1) {
		c.errf("budget.warn_at", "%v: want a fraction in (0, 1]", b.WarnAt)
	}
	if math.IsNaN(b.CapUSD) || math.IsInf(b.CapUSD, 0) || b.CapUSD < 0 {
		c.errf("budget.cap_usd", "%v: must be a non-negative amount", b.CapUSD)
	} else if len(c.p.cfg.Providers) > 0 && b.CapUSD == 0 {
		c.errf("budget.cap_usd", "must be positive when providers: are configured (it is the hard spend cap)")
	}
	if b.DefaultMaxTokens <= 0 {
		c.errf("budget.default_max_tokens", "%d: must be positive", b.DefaultMaxTokens)
	}
	if b.Ledger == "" && len(c.p.cfg.Providers) > 0 {
		c.errf("budget.ledger", "required when providers: are configured")
	}
	switch b.UnknownModel {
	case "deny":
	case "default":
		if _, ok := b.Prices["default"]; !ok {
			c.errf("budget.prices", `unknown_model: default needs a "default" price`)
		}
	default:
		c.errf("budget.unknown_model", "%q: want deny or default", b.UnknownModel)
	}
	c.budgetStore()
	models := make([]string, 0, len(b.Prices))
	for m := range b.Prices {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		pr := b.Prices[m]
		path := joinKey("budget.prices", m)
		for _, f := range []struct {
			key string
			val float64
		}{{"input", pr.Input}, {"output", pr.Output}, {"cache_read", pr.CacheRead}, {"cache_write", pr.CacheWrite}, {"cache_write_1h", pr.CacheWrite1h}, {"priority", pr.Priority}} {
			if math.IsNaN(f.val) || math.IsInf(f.val, 0) || f.val < 0 {
				c.errf(path+"."+f.key, "%v: must be a non-negative price", f.val)
			}
		}
	}
}
