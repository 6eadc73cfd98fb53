package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/egressd/egressd/internal/lib/hop"
	"github.com/egressd/egressd/internal/lib/scrub"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
)

// forwardMetered is the path of every call with a body: shape the body,
// check its fields, tools and URLs, price it, check tokens_per_minute,
// reserve, forward, settle. Free endpoints with a body (token counting)
// are checked the same way and forwarded without a reservation.
func (c *call) forwardMetered(target string) {
	body, ok := c.readBody()
	if !ok {
		return
	}
	s, err := shapeBody(body, c.ep.kind)
	if err != nil {
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", err.Error())
		return
	}
	c.model = s.model
	g, ok := c.bodyAllowed(&s)
	if !ok {
		return
	}
	c.bytesUp = int64(len(s.body))
	if !c.ep.kind.metered() {
		c.exchange(target, s.body, nil)
		return
	}
	m := c.h.meter
	if m == nil {
		c.refuseLedger(errors.New("no meter: the ledger could not be opened at start"))
		return
	}
	if key := outputLimitKey(c.ep.kind, c.prov.Upstream); s.maxOut == 0 && key != "" {
		s.limitOutput(key, m.DefaultOutputLimit())
		c.bytesUp = int64(len(s.body))
	}
	var plan toolPlan
	if c.ep.kind != kindFixed {
		if plan, err = c.planTools(&s, g); c.refuseBody(err) {
			return
		}
		c.bytesUp = int64(len(s.body))
	}
	q, ok := c.quote(m, &s)
	if !ok {
		return
	}
	q.MaxCostUSD += plan.reserveUSD
	if ok, wait := c.h.tpm.take(c.name, c.prov.TokensPerMinute, q.InputTokens, c.h.clock()); !ok {
		secs := max(1, int(math.Ceil(wait.Seconds())))
		c.w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.refuse(http.StatusTooManyRequests, vocab.ReasonRateLimited, "rate_limited",
			"provider "+c.name+" is over its tokens_per_minute limit in egressd; retry in "+strconv.Itoa(secs)+"s")
		return
	}
	res, err := m.Reserve(q.Model, q.MaxCostUSD)
	if err != nil {
		c.h.tpm.adjust(c.name, c.prov.TokensPerMinute, -q.InputTokens)
		c.refuseReservation(err)
		return
	}
	h := &hold{res: res, tpm: &c.h.tpm, name: c.name, limit: c.prov.TokensPerMinute, input: q.InputTokens}
	// A no-op after Settle; returns the money if anything below panics.
	defer h.Release()
	c.exchange(target, s.body, &meterState{q: q, res: h, limit: guardLimit(q.OutputTokens), fixed: c.ep.kind == kindFixed, tools: plan})
}

// readBody reads the request body within the gateway's bound.
func (c *call) readBody() ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.h.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			c.refuse(http.StatusRequestEntityTooLarge, vocab.ReasonBadRequest, "request_too_large",
				"request body over "+strconv.FormatInt(c.h.maxBody, 10)+" bytes")
			return nil, false
		}
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", "reading the request body failed")
		return nil, false
	}
	return body, true
}

// quote prices the call's worst case: at the dearest of the models it
// names (OpenRouter's models list falls back to any of them), with output
// multiplied by the choices generated, or the declared price of a policy
// endpoint.
func (c *call) quote(m *meter.Meter, s *shaped) (meter.Quote, bool) {
	if c.ep.kind == kindFixed {
		name := "endpoint " + c.r.Method + " " + c.ep.glob.String()
		return meter.Quote{Model: name, PriceKey: name, MaxCostUSD: c.ep.price}, true
	}
	out := s.maxOut*s.choices + s.reasoning
	if c.ep.kind == kindEmbeddings {
		out = meter.NoOutput
	}
	// One-hour cache writes cost more than any other input; a body that
	// may ask for them is reserved at that rate.
	long := c.format == meter.FormatAnthropic && asksLongCache(s.body)
	var best meter.Quote
	for i, model := range append([]string{s.model}, s.models...) {
		q, err := m.QuoteCall(meter.Call{Model: model, InputTokens: s.inputTokens(), OutputTokens: out,
			CacheWrite1h: long, Priority: s.priority})
		var te *meter.TierError
		if errors.As(err, &te) {
			c.refuse(http.StatusForbidden, vocab.ReasonFieldNotAllowed, "field_not_allowed", err.Error(), "field", "service_tier")
			return meter.Quote{}, false
		}
		if err != nil {
			c.refuse(http.StatusForbidden, vocab.ReasonUnknownModel, "unknown_model", err.Error(), "model", logSafe(model))
			return meter.Quote{}, false
		}
		if i == 0 || q.MaxCostUSD > best.MaxCostUSD {
			best = q
		}
	}
	return best, true
}

// bodyAllowed checks the body's fields, tools and URLs, and answers the
// refusal when one fails.
func (c *call) bodyAllowed(s *shaped) (grants, bool) {
	g := grants{provider: c.name, format: c.format, fields: c.prov.AllowFields, tools: c.prov.AllowTools}
	if c.h.policy != nil {
		if p := c.h.policy(); p != nil {
			g.decide, g.pol = p.Decide, p
		}
	}
	var err error
	if c.format == meter.FormatAnthropic {
		err = checkBetas(c.r.Header.Values("Anthropic-Beta"), g)
	}
	if err == nil && c.ep.kind != kindFixed {
		err = checkFields(c.ep.kind, s.members, g)
	}
	if err == nil {
		err = checkReach(s.body, s.members, append([]string{s.model}, s.models...), g)
	}
	if !c.refuseBody(err) {
		return g, true
	}
	return g, false
}

// refuseBody answers a body check's refusal; false when err is nil.
func (c *call) refuseBody(err error) bool {
	var fe *fieldError
	var re *reachError
	switch {
	case err == nil:
		return false
	case errors.As(err, &fe) && fe.tool:
		c.refuse(http.StatusForbidden, vocab.ReasonToolNotAllowed, "tool_not_allowed", fe.msg, "tool", logSafe(fe.field))
	case errors.As(err, &fe):
		c.refuse(http.StatusForbidden, vocab.ReasonFieldNotAllowed, "field_not_allowed", fe.msg, "field", logSafe(fe.field))
	case errors.As(err, &re) && re.reason == vocab.ReasonBadRequest:
		c.refuse(http.StatusBadRequest, re.reason, "invalid_request_error", re.msg)
	case errors.As(err, &re):
		c.refuse(http.StatusForbidden, re.reason, re.reason.String(), re.msg)
	default:
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", err.Error())
	}
	return true
}

// forwardFree passes a bodiless GET of the endpoint table (model lists,
// key info) through with the key swapped and nothing reserved: providers
// do not bill them.
func (c *call) forwardFree(target string) {
	if c.r.ContentLength != 0 {
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", c.r.Method+" with a body is not forwarded")
		return
	}
	c.exchange(target, nil, nil)
}

// meterState is the metering side of one forwarded call.
type meterState struct {
	q     meter.Quote
	res   *hold
	limit int64    // the stream guard's cut, in estimated output tokens
	fixed bool     // a declared price per call: charged as declared
	tools toolPlan // granted per-use tools: their fees
}

// exchange sends the call upstream and streams the answer back. The
// upstream request is detached from the agent's connection: if the agent
// leaves, the upstream is still read (bounded) so the usage the provider
// bills is the usage charged.
func (c *call) exchange(target string, body []byte, ms *meterState) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(c.r.Context()))
	defer cancel()
	// Once the request headers are on the wire the provider may run and
	// bill the call, whatever happens to the answer.
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, c.r.Method, target, bytes.NewReader(body))
	if err != nil {
		c.release(ms)
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "invalid_request_error", "cannot build the upstream request")
		return
	}
	req.ContentLength = int64(len(body))
	if body == nil {
		req.Body = http.NoBody
	}
	c.upstreamHeaders(req)
	// Armed before the round trip: an agent that leaves while a slow
	// non-streaming call is still running starts the drain bound too.
	d := newDrainer(c.h, cancel)
	stop := context.AfterFunc(c.r.Context(), d.start)
	defer func() { stop(); d.finish() }()
	resp, err := c.h.transport.RoundTrip(req)
	if err != nil {
		c.roundTripFailed(ms, d, sent.Load(), err)
		return
	}
	defer resp.Body.Close()
	c.copyResponseHeaders(resp)
	c.w.WriteHeader(resp.StatusCode)

	var ex *meter.Extractor
	if ms != nil {
		ex = meter.NewExtractor(c.format, isEventStream(resp.Header))
	}
	n, cut, readErr := c.pump(resp.Body, ms, ex, d)
	stop()
	d.finish()
	cost, estimated, note := c.settle(ms, resp.StatusCode, ex, readErr, cut)
	if d.gone() {
		note = joinNote(note, "agent disconnected mid-response")
	}
	if cut {
		c.record(vocab.Deny, vocab.ReasonBudgetExceeded, resp.StatusCode, n)
	} else {
		c.record(vocab.Allow, vocab.ReasonAllowlisted, resp.StatusCode, n)
	}
	c.logDone(resp.StatusCode, n, cost, estimated, note)
}

// roundTripFailed handles a call that got no response. One that never
// reached the provider (the connection or the request write failed first)
// is released. One the provider may have received is charged its full
// reservation as an estimate: its usage will never arrive.
func (c *call) roundTripFailed(ms *meterState, d *drainer, sent bool, err error) {
	if !sent && !d.gone() {
		c.release(ms)
		c.upstreamFailed(err)
		return
	}
	var cost float64
	if ms != nil {
		cost, _, _ = c.settle(ms, http.StatusOK, meter.NewExtractor(c.format, false), err, false)
	}
	if d.gone() {
		c.record(vocab.Allow, vocab.ReasonAllowlisted, http.StatusBadGateway, 0)
		c.logDone(http.StatusBadGateway, 0, cost, ms != nil, "agent left before the provider answered; the wait was cut")
		return
	}
	c.upstreamFailed(err) // answers the agent and records the decision
	c.logDone(http.StatusBadGateway, 0, cost, ms != nil,
		"the provider may have received the call but its answer never came: charged its reservation")
}

// upstreamHeaders copies the agent's headers minus hop-by-hop ones and
// both credential headers, then injects the real key in the format's
// header. The agent token never goes upstream.
func (c *call) upstreamHeaders(req *http.Request) {
	for k, vs := range c.r.Header {
		if hop.Is(k, c.r.Header) || k == "Authorization" || k == "X-Api-Key" || k == "Accept-Encoding" ||
			k == "Content-Length" || k == "Host" || k == "Cookie" || k == "Expect" {
			continue
		}
		req.Header[k] = vs
	}
	// Identity, so the usage parser sees plain bytes and nothing waits on
	// a compressor's buffer.
	req.Header.Set("Accept-Encoding", "identity")
	if c.format == meter.FormatAnthropic {
		req.Header.Set("X-Api-Key", c.key)
	} else {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
}

// copyResponseHeaders passes the provider's headers through, minus
// hop-by-hop ones and any header that would carry the key.
func (c *call) copyResponseHeaders(resp *http.Response) {
	dst := c.w.Header()
	for k, vs := range resp.Header {
		// Header names are canonicalised, so compare them case-blind.
		if hop.Is(k, resp.Header) || strings.Contains(strings.ToLower(k), strings.ToLower(c.key)) || containsAny(vs, c.key) {
			continue
		}
		dst[k] = vs
	}
}

func containsAny(vs []string, s string) bool {
	for _, v := range vs {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(h.Get("Content-Type"))), "text/event-stream")
}

func (c *call) upstreamFailed(err error) {
	msg := "the provider could not be reached"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "the provider did not answer in time"
	}
	c.h.log.Warn("gateway: upstream failed", "provider", c.name, "err", scrub.String(err.Error(), c.key))
	body := errorBody(c.format, "upstream_error", msg)
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(http.StatusBadGateway)
	c.w.Write(body)
	c.record(vocab.Allow, vocab.ReasonAllowlisted, http.StatusBadGateway, int64(len(body)))
}

func (c *call) release(ms *meterState) {
	if ms != nil {
		ms.res.Release()
	}
}
