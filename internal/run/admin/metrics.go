package admin

import (
	"sync"
	"sync/atomic"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/internal/shared/declog"
)

// maxProviders bounds the provider label: names come from policy.yaml, but
// a label must never be something an agent can multiply.
const maxProviders = 32

// metrics holds every collector the admin listener exports. Counters for
// the (proto, verdict, reason) enum triple are cached in a flat array so
// Record does no label hashing on the hot path.
type metrics struct {
	decisions   *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	dnsQueries  *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	tokens      *prometheus.CounterVec
	ask         *prometheus.CounterVec

	nProto, nVerdict, nReason int
	decCache                  []atomic.Pointer[prometheus.Counter]
	dnsCache                  []atomic.Pointer[prometheus.Counter] // (verdict, reason), one per DNS query

	provMu    sync.Mutex
	providers map[string]struct{}

	// Totals for /status, kept here so it needs no scrape.
	allowed, denied, wouldDeny, dns, bytesUp, bytesDown atomic.Uint64
	tunnels                                             atomic.Int64 // from entries
	tunnelsOpen                                         func() int   // authoritative, if the daemon has it
}

// enumSize counts the values of an enum by walking until String reports
// "unknown": the names are policy's, so this stays right when it grows.
func enumSize(name func(int) string) int {
	n := 0
	for name(n) != "unknown" {
		n++
	}
	return n
}

func newMetrics(reg prometheus.Registerer, tunnelsOpen func() int) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_decisions_total",
			Help: "Decisions by edge protocol, verdict and reason (folded denials included).",
		}, []string{"proto", "verdict", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_bytes_total",
			Help: "Bytes relayed through finished tunnels and requests, by direction (up = agent to upstream).",
		}, []string{"direction"}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_dns_queries_total",
			Help: "DNS queries answered or refused, by verdict and reason.",
		}, []string{"verdict", "reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_ratelimit_hits_total",
			Help: "Requests and queries refused because a token bucket was empty, by protocol.",
		}, []string{"proto"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_policy_reloads_total",
			Help: "Policy reload attempts by result (ok, error); a failed reload keeps the last good policy.",
		}, []string{"result"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_gateway_tokens_total",
			Help: "Tokens metered by the LLM gateway, by provider and direction (input, output).",
		}, []string{"provider", "direction"}),
		ask: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_ask_events_total",
			Help: "ask: questions by what happened: asked and expired (approval_pending), allowed (allowlisted), denied (operator_denied).",
		}, []string{"verdict", "reason"}),
		providers: make(map[string]struct{}),
	}
	reg.MustRegister(m.decisions, m.bytes, m.dnsQueries, m.rateLimited, m.reloads, m.tokens, m.ask)
	m.tunnelsOpen = tunnelsOpen
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "egressd_tunnels_open",
		Help: "CONNECT tunnels open now.",
	}, func() float64 { return float64(m.openTunnels()) }))
	// Both results exist from the start, so a rate() on errors works before
	// the first failure.
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")

	m.nProto = enumSize(func(i int) string { return vocab.Proto(i).String() })
	m.nVerdict = enumSize(func(i int) string { return vocab.Verdict(i).String() })
	m.nReason = enumSize(func(i int) string { return vocab.Reason(i).String() })
	m.decCache = make([]atomic.Pointer[prometheus.Counter], m.nProto*m.nVerdict*m.nReason)
	m.dnsCache = make([]atomic.Pointer[prometheus.Counter], m.nVerdict*m.nReason)
	return m
}

// decision returns the counter for one label triple.
func (m *metrics) decision(p vocab.Proto, v vocab.Verdict, r vocab.Reason) prometheus.Counter {
	if int(p) >= m.nProto || int(v) >= m.nVerdict || int(r) >= m.nReason {
		return m.decisions.WithLabelValues(p.String(), v.String(), r.String())
	}
	slot := &m.decCache[(int(p)*m.nVerdict+int(v))*m.nReason+int(r)]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.decisions.WithLabelValues(p.String(), v.String(), r.String())
	slot.Store(&c)
	return c
}

// dnsQuery is dnsQueries' counter for (v, r), cached like decision's:
// every DNS query counts in both.
func (m *metrics) dnsQuery(v vocab.Verdict, r vocab.Reason) prometheus.Counter {
	if int(v) >= m.nVerdict || int(r) >= m.nReason {
		return m.dnsQueries.WithLabelValues(v.String(), r.String())
	}
	slot := &m.dnsCache[int(v)*m.nReason+int(r)]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.dnsQueries.WithLabelValues(v.String(), r.String())
	slot.Store(&c)
	return c
}

// provider returns the label for a provider name, "other" past the bound.
func (m *metrics) provider(name string) string {
	m.provMu.Lock()
	defer m.provMu.Unlock()
	if _, ok := m.providers[name]; ok {
		return name
	}
	if len(m.providers) >= maxProviders {
		return "other"
	}
	m.providers[name] = struct{}{}
	return name
}

// record updates the metrics for one entry.
func (m *metrics) record(e *declog.Entry) {
	switch e.Event {
	case vocab.EventDecision, vocab.EventSummary:
		n := 1.0
		if e.Event == vocab.EventSummary {
			if e.Count <= 0 {
				return
			}
			n = float64(e.Count)
		}
		m.decision(e.Proto, e.Verdict, e.Reason).Add(n)
		if e.Proto == vocab.ProtoDNS {
			m.dnsQuery(e.Verdict, e.Reason).Add(n)
		}
		if e.Reason == vocab.ReasonRateLimited {
			m.rateLimited.WithLabelValues(e.Proto.String()).Add(n)
		}
		m.count(e, uint64(n))
		if e.Event == vocab.EventDecision && e.Proto == vocab.ProtoConnect && e.Verdict.Allowed() {
			m.tunnels.Add(1)
		}
	case vocab.EventClose:
		if e.BytesUp > 0 {
			m.bytes.WithLabelValues("up").Add(float64(e.BytesUp))
			m.bytesUp.Add(uint64(e.BytesUp))
		}
		if e.BytesDn > 0 {
			m.bytes.WithLabelValues("down").Add(float64(e.BytesDn))
			m.bytesDown.Add(uint64(e.BytesDn))
		}
		if e.Proto == vocab.ProtoConnect {
			m.tunnels.Add(-1)
		}
	case vocab.EventAsk:
		m.ask.WithLabelValues(e.Verdict.String(), e.Reason.String()).Inc()
	case vocab.EventUsage:
		p := m.provider(e.Provider)
		if e.InputTokens > 0 {
			m.tokens.WithLabelValues(p, "input").Add(float64(e.InputTokens))
		}
		if e.OutputTokens > 0 {
			m.tokens.WithLabelValues(p, "output").Add(float64(e.OutputTokens))
		}
	}
}

func (m *metrics) count(e *declog.Entry, n uint64) {
	switch e.Verdict {
	case vocab.Allow:
		m.allowed.Add(n)
	case vocab.Report:
		m.wouldDeny.Add(n)
	default:
		m.denied.Add(n)
	}
	if e.Proto == vocab.ProtoDNS {
		m.dns.Add(n)
	}
}

// openTunnels prefers the daemon's own count; the one derived from entries
// (allowed CONNECT decisions minus CONNECT closes) is the fallback, never
// shown below zero.
func (m *metrics) openTunnels() int64 {
	if m.tunnelsOpen != nil {
		return int64(m.tunnelsOpen())
	}
	return max(m.tunnels.Load(), 0)
}
