package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/canonpath"
)

// DefaultAPIRate is the token bucket of an apis: route that sets no rate:
// the same shape as limits.host, since a route is one destination.
var DefaultAPIRate = RateConfig{RPS: 10, Burst: 20}

// DefaultAPIMaxBodyBytes bounds a request body on an apis: route that sets
// no max_body_bytes.
const DefaultAPIMaxBodyBytes = 10 << 20

// APIRoute is one compiled apis: entry. Read only.
type APIRoute struct {
	Name         string
	Upstream     *url.URL // https, Path without a trailing slash
	Host         string   // canonical upstream host, reserved for the gateway
	Rules        []APIRule
	Rate         RateConfig
	MaxBodyBytes int64
	cfg          *APIConfig

	compiled []apiRule
}

// Config returns the route's entry as written, with defaults filled in.
func (r *APIRoute) Config() *APIConfig { return r.cfg }

// apiRule is one allow entry of a route, compiled.
type apiRule struct {
	methods []string
	paths   []pathPattern
}

// pathPattern is a glob on the canonical path plus, when the pattern has
// a '?', the exact set of query parameters it requires.
type pathPattern struct {
	glob     canonpath.Glob
	hasQuery bool
	query    url.Values
}

// APIDecision is the answer for one call on an apis: route: the verdict,
// the reason, the canonical path the rules were matched against and the
// query to forward.
type APIDecision struct {
	Verdict vocab.Verdict
	Reason  vocab.Reason
	Route   *APIRoute
	Rule    int    // index in the route's allow:, -1 when none matched
	Path    string // canonical path ("" when the path was refused as malformed)
	Query   string // query to send upstream (re-encoded when a rule fixes it)
	Detail  string // what was wrong, for bad_request
}

// RuleText names the matched rule as a key path, apis.github.allow[1];
// "" when none matched.
func (d APIDecision) RuleText() string {
	if d.Route == nil || d.Rule < 0 {
		return ""
	}
	return fmt.Sprintf("%s.allow[%d]", joinKey("apis", d.Route.Name), d.Rule)
}

// API returns the route called name (as it appears in the gateway path,
// case-blind), or nil.
func (p *Policy) API(name string) *APIRoute {
	return p.apis[strings.ToLower(name)]
}

// DecideAPI answers whether method on escapedPath?rawQuery (the part after
// /<name>) may go to route name's upstream. Pure, like Decide. mode: report
// does not relax it: the route carries a secret, so a would-be denial is
// still refused.
func (p *Policy) DecideAPI(name, method, escapedPath, rawQuery string) APIDecision {
	r := p.API(name)
	if r == nil {
		return APIDecision{Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted, Rule: -1}
	}
	d := APIDecision{Verdict: vocab.Deny, Route: r, Rule: -1}
	if escapedPath == "" {
		escapedPath = "/"
	}
	canon, err := canonpath.Clean(escapedPath)
	if err != nil {
		d.Reason, d.Detail = vocab.ReasonBadRequest, err.Error()
		return d
	}
	d.Path = canon
	q, qerr := url.ParseQuery(rawQuery)
	for i, rule := range r.compiled {
		if !slices.Contains(rule.methods, method) {
			continue
		}
		for _, pp := range rule.paths {
			if !pp.glob.Match(canon) {
				continue
			}
			if !pp.hasQuery {
				d.Verdict, d.Reason, d.Rule, d.Query = vocab.Allow, vocab.ReasonAllowlisted, i, rawQuery
				return d
			}
			if qerr == nil && sameQuery(q, pp.query) {
				d.Verdict, d.Reason, d.Rule, d.Query = vocab.Allow, vocab.ReasonAllowlisted, i, pp.query.Encode()
				return d
			}
		}
	}
	d.Reason = vocab.ReasonPathNotAllowed
	return d
}

// sameQuery reports whether a and b hold the same parameters with the same
// values, order of values aside.
func sameQuery(a, b url.Values) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool {
		if len(x) != len(y) {
			return false
		}
		x, y = slices.Clone(x), slices.Clone(y)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	})
}

// APIHint is the rule that would allow a refused call, as a line to add
// under apis.<name>.allow:, e.g.
// `add "- {methods: [POST], paths: ["/repos/acme/app/issues"]}" under apis.github.allow:`.
// The path is the exact canonical path; the query is included only when a
// rule already constrains the query of that path (otherwise the suggested
// rule would be needlessly narrow).
//
// A path holding '*' or '"' gets no hint: pasted into the policy, the
// agent's spelling would read as a glob (a call to "/**" would grant every
// path) or break the quoting.
func APIHint(d APIDecision, method, rawQuery string) string {
	if d.Route == nil || d.Reason != vocab.ReasonPathNotAllowed || strings.ContainsAny(d.Path, `*"`) {
		return ""
	}
	return fmt.Sprintf("add \"- %s\" under %s.allow:", SuggestAPIRule(d.Route, method, d.Path, rawQuery), joinKey("apis", d.Route.Name))
}

// SuggestAPIRule renders the allow entry for one call in flow style:
// {methods: [GET], paths: ["/repos/acme/app/issues"]}.
func SuggestAPIRule(r *APIRoute, method, canon, rawQuery string) string {
	p := canon
	if r != nil && r.queryConstrained(canon) {
		if q, err := url.ParseQuery(rawQuery); err == nil {
			p += "?" + q.Encode()
		}
	}
	return fmt.Sprintf("{methods: [%s], paths: [%q]}", method, p)
}

func (r *APIRoute) queryConstrained(canon string) bool {
	for _, rule := range r.compiled {
		for _, pp := range rule.paths {
			if pp.hasQuery && pp.glob.Match(canon) {
				return true
			}
		}
	}
	return false
}

// apis checks each apis: route, compiles its rules and reserves its
// upstream host for the gateway (after providers, which keep a host both
// name).
func (c *compiler) apis() {
	p := c.p
	p.apis = map[string]*APIRoute{}
	names := slices.Sorted(maps.Keys(p.cfg.APIs))
	p.apiRes = make([]Rule, len(names))
	for i, name := range names {
		ac := p.cfg.APIs[name]
		path := joinKey("apis", name)
		r := c.apiRoute(path, name, &ac)
		p.cfg.APIs[name] = ac
		if r == nil {
			continue
		}
		r.cfg = &ac
		p.apis[name] = r
		res := &p.apiRes[i]
		*res = Rule{Index: -1, API: name, Base: r.Upstream.String()}
		if ip, err := netip.ParseAddr(strings.Trim(r.Host, "[]")); err == nil {
			res.Prefix = hostPrefix(ip.Unmap())
			if p.provIPs[ip.Unmap()] == nil {
				p.provIPs[ip.Unmap()] = res
			}
			continue
		}
		res.Host = r.Host
		if p.provHosts[r.Host] == nil {
			p.provHosts[r.Host] = res
		}
	}
}

// apiRoute validates one route and fills its defaults; nil when invalid.
func (c *compiler) apiRoute(path, name string, ac *APIConfig) *APIRoute {
	n := len(c.errs)
	if !plainKey(name) {
		c.errf(path, "route names are served as /<name>/: use letters, digits, '-' and '_'")
	}
	if _, dup := c.p.cfg.Providers[name]; dup {
		c.errf(path, "providers.%s has the same name: both would be served at /%s/ on the gateway; rename one", name, name)
	}
	c.envName(path+".client_token_env", ac.ClientTokenEnv)
	c.secret(path+".secret", ac)
	if ac.CAFile != "" && !filepath.IsAbs(ac.CAFile) {
		c.errf(path+".ca_file", "%q: give an absolute path to a PEM bundle", ac.CAFile)
	}
	if ac.Rate == nil {
		rate := DefaultAPIRate
		ac.Rate = &rate
	}
	c.rate(path+".rate", *ac.Rate)
	switch {
	case ac.MaxBodyBytes < 0:
		c.errf(path+".max_body_bytes", "%d: must not be negative", ac.MaxBodyBytes)
	case ac.MaxBodyBytes == 0:
		ac.MaxBodyBytes = DefaultAPIMaxBodyBytes
	}
	u, host, msg := apiUpstream(ac.Upstream)
	if msg != "" {
		c.errf(path+".upstream", "%q: %s", ac.Upstream, msg)
	}
	rules := c.apiRules(path+".allow", ac.Allow)
	if len(c.errs) > n {
		return nil
	}
	return &APIRoute{Name: name, Upstream: u, Host: host, Rules: ac.Allow, Rate: *ac.Rate,
		MaxBodyBytes: ac.MaxBodyBytes, compiled: rules}
}

// secret checks that exactly one of header or basic is given, with the
// secret in an environment variable the agent's token does not share.
func (c *compiler) secret(path string, ac *APIConfig) {
	s := ac.Secret
	hasHeader := s.Header != "" || s.Prefix != "" || s.Env != ""
	switch {
	case hasHeader && s.Basic != nil:
		c.errf(path, "has both header and basic: give one")
		return
	case s.Basic != nil:
		if s.Basic.User == "" || strings.ContainsAny(s.Basic.User, ":\r\n") {
			c.errf(path+".basic.user", "%q: required, without ':' or line breaks", s.Basic.User)
		}
		c.envName(path+".basic.password_env", s.Basic.PasswordEnv)
		if s.Basic.PasswordEnv == ac.ClientTokenEnv && s.Basic.PasswordEnv != "" {
			c.errf(path+".basic.password_env", "must differ from client_token_env: the agent must never hold the secret")
		}
	case hasHeader:
		if !validHeaderName(s.Header) {
			c.errf(path+".header", "%q: required, a header name such as Authorization", s.Header)
		}
		if strings.ContainsAny(s.Prefix, "\r\n") {
			c.errf(path+".prefix", "must not contain line breaks")
		}
		c.envName(path+".env", s.Env)
		if s.Env == ac.ClientTokenEnv && s.Env != "" {
			c.errf(path+".env", "must differ from client_token_env: the agent must never hold the secret")
		}
	default:
		c.errf(path, "required: {header: Authorization, prefix: \"Bearer \", env: VAR} or {basic: {user: NAME, password_env: VAR}}")
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isTokenChar is RFC 9110's tchar: what a method or header name is made of.
func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// apiUpstream checks an apis: upstream: https only (a private CA is named
// with ca_file, never answered with plain http), no credentials, query or
// fragment, a canonical base path.
func apiUpstream(s string) (*url.URL, string, string) {
	host, msg := upstreamHost(s)
	if msg != "" {
		return nil, "", msg
	}
	u, _ := url.Parse(s) // upstreamHost parsed it
	if u.Scheme != "https" {
		return nil, "", "scheme must be https (name a private CA with ca_file)"
	}
	if ep := u.EscapedPath(); ep != "" && ep != "/" {
		canon, err := canonpath.Clean(ep)
		if err != nil {
			return nil, "", "path: " + err.Error()
		}
		if canon != ep && canon+"/" != ep {
			return nil, "", fmt.Sprintf("path is not canonical: write %q", canon)
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	return u, host, ""
}

// apiRules compiles a route's allow list; an empty list is an error, since
// a route that refuses every call is a mistake, not a policy.
func (c *compiler) apiRules(path string, rules []APIRule) []apiRule {
	if len(rules) == 0 {
		c.errf(path, "empty: list the calls the agent may make, e.g. - {methods: [GET], paths: [\"/repos/acme/app/issues\"]}")
	}
	out := make([]apiRule, len(rules))
	for i, ar := range rules {
		rp := fmt.Sprintf("%s[%d]", path, i)
		if len(ar.Methods) == 0 {
			c.errf(rp+".methods", "empty: list at least one method, e.g. [GET]")
		}
		for j, m := range ar.Methods {
			switch {
			case !validHeaderName(m):
				c.errf(fmt.Sprintf("%s.methods[%d]", rp, j), "%q: not an HTTP method", m)
			case m != strings.ToUpper(m):
				c.errf(fmt.Sprintf("%s.methods[%d]", rp, j), "%q: methods are case-sensitive; write %s", m, strings.ToUpper(m))
			}
		}
		out[i].methods = ar.Methods
		if len(ar.Paths) == 0 {
			c.errf(rp+".paths", "empty: list at least one path pattern")
		}
		for j, s := range ar.Paths {
			pp, msg := compilePathPattern(s)
			if msg != "" {
				c.errf(fmt.Sprintf("%s.paths[%d]", rp, j), "%s", msg)
				continue
			}
			out[i].paths = append(out[i].paths, pp)
		}
	}
	return out
}

// compilePathPattern splits "/path/glob?k=v&..." into its glob and the
// exact query it requires.
func compilePathPattern(s string) (pathPattern, string) {
	p, q, hasQuery := strings.Cut(s, "?")
	g, err := canonpath.Compile(p)
	if err != nil {
		return pathPattern{}, err.Error()
	}
	pp := pathPattern{glob: g, hasQuery: hasQuery}
	if hasQuery {
		v, err := url.ParseQuery(q)
		if err != nil {
			return pathPattern{}, fmt.Sprintf("%q: query: %v", s, err)
		}
		pp.query = v
	}
	return pp, ""
}

// apiRouteNames lists the routes in name order, for summaries.
func (p *Policy) apiRouteNames() []string {
	return slices.Sorted(maps.Keys(p.apis))
}
