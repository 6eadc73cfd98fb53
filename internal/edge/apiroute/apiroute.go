// Package apiroute owns the gateway's apis: routes: a call to
// /<route>/<path> is checked for the agent token, matched against the
// route's method/path rules on the canonical path, rate and size limited,
// and forwarded over TLS with the route's secret injected; the secret is
// scrubbed from everything that comes back, and redirects are never
// followed.
//
// Order of checks, one place: route → agent token (401 with a Basic
// challenge, which git needs before it sends a password) → secret present
// → DecideAPI (canonical path, rules) → route rate → body size → forward
// → scrub. Every request gets one decision-log entry and one slog line.
package apiroute

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/lib/token"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/catrust"
	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/ratelimit"
	"github.com/egressd/egressd/policy"
)

// DialFunc connects to host:port; the daemon passes safedial's
// resolve → check → dial.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config wires the handler. Zero values work as documented per field.
type Config struct {
	// Policy returns the current policy (reloads swap it). Required.
	Policy func() *policy.Policy
	// Recorder receives one decision entry per request. nil = discard.
	Recorder declog.Recorder
	// Env reads client_token_env and the secret's variable at request
	// time, so no secret is ever in the policy. nil = os.Getenv.
	Env func(string) string
	// Dial reaches upstreams. nil = a plain net.Dialer (tests only: the
	// daemon passes safedial so every address is checked).
	Dial   DialFunc
	Logger *slog.Logger     // nil = slog.Default()
	Clock  func() time.Time // nil = time.Now
}

// Handler serves every apis: route. Safe for concurrent use.
type Handler struct {
	policy func() *policy.Policy
	rec    declog.Recorder
	env    func(string) string
	dial   DialFunc
	log    *slog.Logger
	clock  func() time.Time
	limits *ratelimit.Table[string]

	trust *catrust.Cache // upstream transports by ca_file ("" = system roots)
}

// New returns a handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{policy: cfg.Policy, rec: cfg.Recorder, env: cfg.Env, dial: cfg.Dial,
		log: cfg.Logger, clock: cfg.Clock, limits: ratelimit.NewTable[string](1024, 0)}
	if h.rec == nil {
		h.rec = declog.Discard{}
	}
	if h.env == nil {
		h.env = os.Getenv
	}
	if h.dial == nil {
		h.dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.clock == nil {
		h.clock = time.Now
	}
	h.trust = catrust.New(h.newTransport)
	return h
}

// RouteName returns the route a gateway request path names ("/github/..."
// → "github"), for the listener's dispatch; "" when the policy has no such
// route.
func (h *Handler) RouteName(p *policy.Policy, escapedPath string) string {
	name, _ := splitRoute(escapedPath)
	if p.API(name) == nil {
		return ""
	}
	return name
}

// splitRoute splits "/<name>/<rest>" into the lowercased name and "/<rest>".
func splitRoute(escaped string) (name, rest string) {
	s := strings.TrimPrefix(escaped, "/")
	name, rest, _ = strings.Cut(s, "/")
	return strings.ToLower(name), "/" + rest
}

// call is one request through a route.
type call struct {
	h       *Handler
	w       http.ResponseWriter
	r       *http.Request
	start   time.Time
	client  string
	route   string
	path    string // canonical, once known
	rule    string
	bytesUp int64
	secrets []string // every form of the secret that must not reach the agent
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{h: h, w: w, r: r, start: h.clock(), client: netaddr.String(netaddr.Parse(r.RemoteAddr))}
	pol := h.policy()
	name, rest := splitRoute(r.URL.EscapedPath())
	c.route = logSafe(name)
	route := pol.API(name)
	if route == nil {
		c.refuse(http.StatusNotFound, vocab.ReasonNotAllowlisted, "no api route "+quote(name)+" on this gateway", "")
		return
	}
	if !c.authorized(route) || !c.loadSecret(route) {
		return
	}
	d := pol.DecideAPI(name, r.Method, rest, r.URL.RawQuery)
	c.path, c.rule = d.Path, d.RuleText()
	switch {
	case d.Reason == vocab.ReasonBadRequest:
		c.refuse(http.StatusBadRequest, d.Reason, "path "+quote(rest)+": "+d.Detail, "")
		return
	case d.Verdict != vocab.Allow:
		hint := policy.APIHint(d, r.Method, r.URL.RawQuery)
		c.refuse(http.StatusForbidden, d.Reason,
			fmt.Sprintf("%s %s is not allowed on route %s", logSafe(r.Method), d.Path, route.Name), hint)
		return
	}
	now := h.clock()
	if ok, wait := h.limits.Allow(route.Name, ratelimit.Limit{RPS: route.Rate.RPS, Burst: route.Rate.Burst}, now); !ok {
		w.Header().Set("Retry-After", fmt.Sprint(max(1, int(wait.Seconds()+0.999))))
		c.refuse(http.StatusTooManyRequests, vocab.ReasonRateLimited, "route "+route.Name+" is over its rate limit", "")
		return
	}
	if r.ContentLength > route.MaxBodyBytes {
		c.refuse(http.StatusRequestEntityTooLarge, vocab.ReasonBadRequest,
			fmt.Sprintf("request body over the route's max_body_bytes (%d)", route.MaxBodyBytes), "")
		return
	}
	c.forward(route, d)
}

// authorized checks the agent token, sent as a Bearer token or as the
// password of HTTP basic auth (any user name), in constant time. A
// missing or wrong token gets 401 with a Basic challenge: git sends its
// credentials only after one.
func (c *call) authorized(route *policy.APIRoute) bool {
	env := route.Config().ClientTokenEnv
	want := c.h.env(env)
	if want == "" {
		c.refuse(http.StatusServiceUnavailable, vocab.ReasonUnauthorized,
			"egressd has no agent token for route "+route.Name+": set "+env+" in egressd's environment", "")
		return false
	}
	got, isBearer := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer ")
	if !isBearer {
		_, got, _ = c.r.BasicAuth()
	}
	if token.Equal(got, want) {
		return true
	}
	c.w.Header().Set("WWW-Authenticate", `Basic realm="egressd `+route.Name+`"`)
	msg := "missing agent token: send the egressd agent token as Authorization: Bearer <token> or as the password of HTTP basic auth"
	if got != "" {
		msg = "wrong agent token for route " + route.Name
	}
	c.refuse(http.StatusUnauthorized, vocab.ReasonUnauthorized, msg, "")
	return false
}

// loadSecret reads the route's secret and every spelling of it that must
// be scrubbed: the value itself and, for basic auth, the base64 credential.
func (c *call) loadSecret(route *policy.APIRoute) bool {
	s := route.Config().Secret
	env := s.Env
	if s.Basic != nil {
		env = s.Basic.PasswordEnv
	}
	v := c.h.env(env)
	if v == "" {
		c.refuse(http.StatusServiceUnavailable, vocab.ReasonUnauthorized,
			"egressd holds no secret for route "+route.Name+": set "+env+" in egressd's environment", "")
		return false
	}
	c.secrets = []string{v}
	if s.Basic != nil {
		c.secrets = append(c.secrets, base64.StdEncoding.EncodeToString([]byte(s.Basic.User+":"+v)))
	}
	return true
}

// newTransport is the template of every upstream transport (catrust adds
// a route's ca_file). It is called directly, never through a Client, so no
// redirect is ever followed with the secret.
func (h *Handler) newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil, DialContext: h.dial, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost: 8, IdleConnTimeout: 90 * time.Second, ExpectContinueTimeout: time.Second,
	}
}

// logSafe bounds an agent-chosen string before it goes into a log field.
func logSafe(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

func quote(s string) string { return fmt.Sprintf("%q", logSafe(s)) }
