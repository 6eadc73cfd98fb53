// Package gateway owns egressd's LLM provider gateway, served on
// listen.gateway: the agent calls /<provider>/<path> over plain HTTP with
// an agent token; the gateway checks the token, prices the worst case of
// the call and reserves it against the hard cap (meter), swaps the token
// for the real provider key, forwards over TLS, and streams the answer
// back unbuffered while reading its usage, then settles the real cost.
//
// Order of checks, one place: route → agent token → provider key present
// → canonical path → endpoint table (endpoints.go: endpoint_not_allowed)
// → body bounds and shape → request fields (fields.go: field_not_allowed)
// → provider-run tools and fetched URLs (reach.go: tool_not_allowed, the
// proxy's reasons) → output limit (sent when the agent named none) →
// granted tools' bounds and fees (tools.go) → price (unknown_model) →
// tokens_per_minute → ledger and budget reservation → forward → stream
// guard → settle (an unknown outcome is charged the full reservation).
// Every refusal is answered in the provider's own error shape and logged
// once (declog + slog), before anything reaches the provider.
//
// The reservation is on disk before the forward (meter.Reserve returns
// once the ledger write that carries it is done; concurrent calls share
// one write), so a crash at any point charges the call its reservation
// rather than forgetting it; a reservation that cannot be written refuses
// the call with ledger_unavailable and nothing is forwarded.
//
// What keeps spend under the cap: the reservation (input estimated from
// the body, media parts priced per part, output from the call's limit);
// the limit itself, sent upstream when the agent gave none (limit.go); and
// the stream guard, which cuts an event stream whose output runs past the
// reservation (guard.go). What a call costs beyond its reservation anyway
// is charged as billed and logged as budget_exceeded; once spend is at the
// cap, every metered call is refused until the period resets.
//
// The real key never reaches the client: it is never copied into response
// headers, and any byte-exact echo of it in a response body (for example a
// provider error message quoting it) is masked in flight, streaming and
// not, by a scrubber that holds back at most len(key)-1 bytes and only
// when they could begin the key. Echoes in other encodings (base64, JSON
// \u escapes) are not detected.
package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/lib/token"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/canonpath"
	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// Defaults for zero Config fields.
const (
	DefaultMaxBodyBytes = 32 << 20
	DefaultDrainTimeout = 2 * time.Minute
	DefaultMaxDrains    = 16
)

// Config wires the gateway. Zero values work as documented per field.
type Config struct {
	// Providers returns the current providers section (reloads swap it);
	// the daemon passes func() { return pol().Config().Providers }.
	// nil = no providers: every request is 404.
	Providers func() map[string]policy.ProviderConfig
	// Policy judges the URLs a request body asks the provider to fetch,
	// as the proxy would judge the agent fetching them itself; the daemon
	// passes the policy holder. nil = every such URL is refused.
	Policy func() *policy.Policy
	// Meter prices and caps spend. nil = metered calls are refused with
	// ledger_unavailable (the ledger could not be opened).
	Meter *meter.Meter
	// Recorder receives one decision entry per request and one usage entry
	// per settled call. nil = discard.
	Recorder declog.Recorder
	// Env reads api_key_env and client_token_env at request time, so no
	// secret is ever in the policy. nil = os.Getenv.
	Env func(string) string
	// Transport reaches the providers. It is called directly (no redirects
	// are followed, so the key is never replayed to another host).
	// nil = a tuned http.Transport that ignores *_PROXY variables.
	Transport http.RoundTripper
	Logger    *slog.Logger     // nil = slog.Default()
	Clock     func() time.Time // nil = time.Now
	// MaxBodyBytes bounds a request body (413 beyond). 0 = 32 MiB.
	MaxBodyBytes int64
	// DrainTimeout bounds how long the upstream is still read after the
	// agent went away, waiting for the usage. 0 = 2 minutes.
	DrainTimeout time.Duration
	// MaxDrains bounds concurrent drains; beyond it the upstream is cut
	// at once and the call charged its reservation if no usage arrived.
	// 0 = 16.
	MaxDrains int
}

// Handler is the gateway's http.Handler. Safe for concurrent use.
type Handler struct {
	providers func() map[string]policy.ProviderConfig
	policy    func() *policy.Policy
	meter     *meter.Meter
	rec       declog.Recorder
	env       func(string) string
	transport http.RoundTripper
	log       *slog.Logger
	clock     func() time.Time
	maxBody   int64
	drainFor  time.Duration
	slots     chan struct{}
	draining  atomic.Int64
	tpm       tpmBuckets

	closeCtx context.Context
	closeFn  context.CancelFunc
}

// New returns a gateway handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{
		providers: cfg.Providers, policy: cfg.Policy, meter: cfg.Meter, rec: cfg.Recorder, env: cfg.Env,
		transport: cfg.Transport, log: cfg.Logger, clock: cfg.Clock,
		maxBody: cfg.MaxBodyBytes, drainFor: cfg.DrainTimeout,
	}
	if h.providers == nil {
		h.providers = func() map[string]policy.ProviderConfig { return nil }
	}
	if h.rec == nil {
		h.rec = declog.Discard{}
	}
	if h.env == nil {
		h.env = os.Getenv
	}
	if h.transport == nil {
		h.transport = NewTransport()
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.clock == nil {
		h.clock = time.Now
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.drainFor <= 0 {
		h.drainFor = DefaultDrainTimeout
	}
	n := cfg.MaxDrains
	if n <= 0 {
		n = DefaultMaxDrains
	}
	h.slots = make(chan struct{}, n)
	h.closeCtx, h.closeFn = context.WithCancel(context.Background())
	return h
}

// Close cuts running drains short (they settle with what they have, an
// estimate if no usage arrived). Call it when shutdown begins; requests
// still streaming to a connected agent are not affected.
func (h *Handler) Close() { h.closeFn() }

// Draining is the number of calls whose agent left and whose upstream is
// still being read for its usage.
func (h *Handler) Draining() int { return int(h.draining.Load()) }

// NewTransport is the default upstream transport: HTTP/2 when offered,
// bounded handshakes, no proxy from the environment (egressd is the way
// out; it must not loop through itself).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// call is one request in flight through the gateway.
type call struct {
	h       *Handler
	w       http.ResponseWriter
	r       *http.Request
	start   time.Time
	name    string // provider
	prov    policy.ProviderConfig
	format  meter.Format
	key     string // the real provider key: never logged, never returned
	client  string
	model   string
	bytesUp int64
	ep      endpoint // the endpoint table row the call matched
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{h: h, w: w, r: r, start: h.clock(), client: clientAddr(r)}
	name, ok := splitPath(r.URL.Path)
	c.name = logSafe(name)
	prov, found := h.providers()[name]
	if !ok || !found {
		c.refuse(http.StatusNotFound, vocab.ReasonNotAllowlisted, "not_found_error",
			"no provider route "+quote(name)+" on this gateway; use /<provider>/<api path> with a provider from the policy")
		return
	}
	c.prov = prov
	f, err := meter.ParseFormat(prov.Format)
	if err != nil {
		c.refuse(http.StatusBadGateway, vocab.ReasonBadRequest, "gateway_misconfigured", "provider "+name+": "+err.Error())
		return
	}
	c.format = f
	if !c.authorized() {
		return
	}
	if c.key = h.env(prov.APIKeyEnv); prov.APIKeyEnv == "" || c.key == "" {
		c.refuse(http.StatusServiceUnavailable, vocab.ReasonUnauthorized, "gateway_misconfigured",
			"egressd holds no key for provider "+name+": set the environment variable named by providers."+name+".api_key_env in egressd's environment")
		return
	}
	rest, err := canonpath.Clean(escapedRest(r.URL.EscapedPath()))
	if err != nil {
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", "invalid path: "+err.Error())
		return
	}
	base, full, err := upstreamPath(prov.Upstream, rest)
	if err != nil {
		c.refuse(http.StatusBadGateway, vocab.ReasonBadRequest, "gateway_misconfigured", "provider "+name+": "+err.Error())
		return
	}
	e, fwd, ok := lookup(f, prov.Endpoints, r.Method, full)
	if !ok {
		c.refuse(http.StatusForbidden, vocab.ReasonEndpointNotAllowed, "endpoint_not_allowed",
			"egressd does not forward "+logSafe(r.Method)+" "+quote(rest)+" to provider "+name+
				": it is not metered (not in the gateway's endpoint table of calls whose cost egressd can reserve and settle)",
			"method", logSafe(r.Method), "path", logSafe(rest))
		return
	}
	c.ep = e
	target := base + fwd
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	if r.Method == http.MethodGet {
		c.forwardFree(target)
		return
	}
	c.forwardMetered(target)
}

// authorized checks the agent token (Bearer or x-api-key, either format)
// in constant time against client_token_env, and answers 401 if not.
func (c *call) authorized() bool {
	want := ""
	if c.prov.ClientTokenEnv != "" {
		want = c.h.env(c.prov.ClientTokenEnv)
	}
	if want == "" {
		c.refuse(http.StatusServiceUnavailable, vocab.ReasonUnauthorized, "gateway_misconfigured",
			"egressd has no agent token for provider "+c.name+": set the environment variable named by providers."+c.name+".client_token_env in egressd's environment")
		return false
	}
	bearer, _ := strings.CutPrefix(c.r.Header.Get("Authorization"), "Bearer ")
	xkey := c.r.Header.Get("X-Api-Key")
	if token.Equal(bearer, want) || token.Equal(xkey, want) {
		return true
	}
	msg := "missing agent token: send the egressd agent token as Authorization: Bearer <token> or x-api-key: <token>"
	if bearer != "" || xkey != "" {
		msg = "wrong agent token for provider " + c.name
	}
	c.refuse(http.StatusUnauthorized, vocab.ReasonUnauthorized, "authentication_error", msg)
	return false
}

// clientAddr names the client the way the proxy and DNS do, so one agent
// is one string across every log line.
func clientAddr(r *http.Request) string {
	return netaddr.String(netaddr.Parse(r.RemoteAddr))
}

// splitPath returns the lowercased provider name of "/<provider>/...".
func splitPath(p string) (name string, ok bool) {
	p, ok = strings.CutPrefix(p, "/")
	name, _, _ = strings.Cut(p, "/")
	return strings.ToLower(name), ok && name != ""
}

// logSafe bounds an agent-chosen string before it goes into a log field.
func logSafe(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
