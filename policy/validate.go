package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// compiler validates a decoded, defaulted Config section by section,
// collecting every problem, and builds the Policy's lookup structures.
type compiler struct {
	p    *Policy
	errs Errors
}

func (c *compiler) errf(path, format string, args ...any) {
	c.errs = append(c.errs, &ValidationError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// compile validates cfg and builds the Policy; problems come back instead.
func compile(cfg Config) (*Policy, Errors) {
	c := &compiler{p: &Policy{cfg: cfg}}
	c.mode()
	c.listen()
	c.resolver()
	c.allow()
	c.networks()
	c.limits()
	c.timeouts()
	c.dns()
	c.log()
	c.admin()
	c.providers()
	c.apis()
	c.budget()
	c.ask()
	c.toolFees()
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	c.p.hash = hashConfig(&c.p.cfg)
	// Every edge logs the matched rule on every request: render each once
	// here so logging it never allocates.
	for i := range c.p.rules {
		c.p.rules[i].text = c.p.rules[i].render()
	}
	for i := range c.p.prov {
		c.p.prov[i].text = c.p.prov[i].render()
	}
	for i := range c.p.apiRes {
		c.p.apiRes[i].text = c.p.apiRes[i].render()
	}
	return c.p, nil
}

// hashConfig hashes the canonical JSON of the effective config (maps are
// sorted by encoding/json, so equal configs hash equal).
func hashConfig(cfg *Config) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return "unhashable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

func (c *compiler) mode() {
	switch c.p.cfg.Mode {
	case "enforce":
	case "report":
		c.p.report = true
	default:
		c.errf("mode", "%q: want enforce or report", c.p.cfg.Mode)
	}
}

func (c *compiler) listen() {
	l := &c.p.cfg.Listen
	seen := map[string]string{}
	for _, f := range []struct{ key, val string }{
		{"listen.proxy", l.Proxy}, {"listen.dns", l.DNS}, {"listen.gateway", l.Gateway}, {"listen.admin", l.Admin},
	} {
		if f.val == "" {
			continue // disabled
		}
		if msg := checkListen(f.val); msg != "" {
			c.errf(f.key, "%q: %s", f.val, msg)
			continue
		}
		if other, dup := seen[f.val]; dup && !strings.HasSuffix(f.val, ":0") {
			c.errf(f.key, "%q is also %s", f.val, other)
		}
		seen[f.val] = f.key
	}
}

// checkListen accepts host:port where host is an IP literal, empty (all
// interfaces) or localhost, and port is 0-65535 (0 = any free port).
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "want host:port, e.g. 127.0.0.1:3128"
	}
	if _, msg := parsePort(port, true); msg != "" {
		return msg
	}
	if host == "" || host == "localhost" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "listen host must be an IP address, localhost or empty"
	}
	return ""
}

func parsePort(s string, zeroOK bool) (uint16, string) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !zeroOK) {
		return 0, fmt.Sprintf("port %q: want 1-65535", s)
	}
	return uint16(n), ""
}

// resolver checks the upstreams and rewrites each to ip:port (port 53 when
// omitted). Names are refused: egressd must not need DNS to find its DNS.
func (c *compiler) resolver() {
	r := &c.p.cfg.Resolver
	if len(r.Upstreams) == 0 {
		c.errf("resolver.upstreams", "empty: list at least one ip:port")
	}
	for i, u := range r.Upstreams {
		path := fmt.Sprintf("resolver.upstreams[%d]", i)
		ap, msg := parseUpstream(u)
		if msg != "" {
			c.errf(path, "%q: %s", u, msg)
			continue
		}
		r.Upstreams[i] = ap.String()
	}
	if r.Timeout <= 0 {
		c.errf("resolver.timeout", "%s: must be positive", r.Timeout)
	}
	if r.MinTTL < 0 {
		c.errf("resolver.min_ttl", "%s: must not be negative", r.MinTTL)
	}
	if r.MaxTTL < r.MinTTL {
		c.errf("resolver.max_ttl", "%s is below min_ttl %s", r.MaxTTL, r.MinTTL)
	}
	if r.CacheSize <= 0 {
		c.errf("resolver.cache_size", "%d: must be positive", r.CacheSize)
	}
}

func parseUpstream(s string) (netip.AddrPort, string) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return ap, "port 0"
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ""
	}
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 53), ""
	}
	return netip.AddrPort{}, "want an IP address with optional port (names would need DNS to find DNS)"
}

func (c *compiler) limits() {
	l := &c.p.cfg.Limits
	c.rate("limits.client", l.Client)
	c.rate("limits.host", l.Host)
	c.rate("limits.dns", l.DNS)
	for _, f := range []struct {
		key string
		val int
	}{
		{"limits.max_conns_per_client", l.MaxConnsPerClient},
		{"limits.max_conns", l.MaxConns},
		{"limits.max_header_bytes", l.MaxHeaderBytes},
	} {
		if f.val <= 0 {
			c.errf(f.key, "%d: must be positive", f.val)
		}
	}
}

// rate checks a token bucket: both zero (unlimited) or both positive.
func (c *compiler) rate(path string, r RateConfig) {
	switch {
	case math.IsNaN(r.RPS) || math.IsInf(r.RPS, 0) || r.RPS < 0:
		c.errf(path+".rps", "%v: must be a non-negative number", r.RPS)
	case r.Burst < 0:
		c.errf(path+".burst", "%d: must not be negative", r.Burst)
	case r.RPS > 0 && r.Burst == 0:
		c.errf(path+".burst", "0 with rps %v admits nothing; use at least 1", r.RPS)
	case r.RPS == 0 && r.Burst > 0:
		c.errf(path+".rps", "0 with burst %d never refills; use rps: 0, burst: 0 for unlimited", r.Burst)
	}
}

func (c *compiler) timeouts() {
	t := c.p.cfg.Timeouts
	for _, f := range []struct {
		key string
		val time.Duration
	}{
		{"timeouts.dial", t.Dial}, {"timeouts.header", t.Header},
		{"timeouts.idle", t.Idle}, {"timeouts.shutdown", t.Shutdown},
	} {
		if f.val <= 0 {
			c.errf(f.key, "%s: must be positive", f.val)
		}
	}
}

func (c *compiler) dns() {
	q := c.p.cfg.DNS.QTypes
	if len(q) == 0 {
		c.errf("dns.qtypes", "empty: list at least one type, e.g. [A, AAAA]")
	}
	for i, name := range q {
		t, ok := ParseQType(name)
		if !ok && name == "" {
			c.errf(fmt.Sprintf("dns.qtypes[%d]", i), `empty (YAML reads a bare null as nothing: write "NULL" in quotes)`)
			continue
		}
		if !ok {
			c.errf(fmt.Sprintf("dns.qtypes[%d]", i), "%q: unknown type (e.g. A, AAAA, CNAME, HTTPS, or TYPE65)", name)
			continue
		}
		c.p.qtypes[t>>6] |= 1 << (t & 63)
	}
}

func (c *compiler) log() {
	l := c.p.cfg.Log
	if l.MaxSizeMB < 0 {
		c.errf("log.max_size_mb", "%d: must not be negative", l.MaxSizeMB)
	}
	if l.Keep < 0 {
		c.errf("log.keep", "%d: must not be negative", l.Keep)
	}
}

func (c *compiler) admin() {
	e := c.p.cfg.Admin.TokenEnv
	if e != "" && !validEnvName(e) {
		c.errf("admin.token_env", "%q: not an environment variable name", e)
	}
	// Off loopback the admin listener may be reachable by the agent, which
	// would then read every decision and hold open event streams.
	if a := c.p.cfg.Listen.Admin; a != "" && e == "" && !loopbackListen(a) {
		c.errf("listen.admin", "%q is not a loopback address: set admin.token_env (a bearer token) or listen on 127.0.0.1", a)
	}
}

// loopbackListen reports whether a listen address (already validated)
// binds loopback only.
func loopbackListen(s string) bool {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func validEnvName(s string) bool {
	if s == "" || ('0' <= s[0] && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}
