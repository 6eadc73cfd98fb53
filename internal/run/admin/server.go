// Package admin owns egressd's admin listener: Prometheus metrics counted
// from decision-log entries, health and readiness, a JSON status, and a
// server-sent-events stream of decisions; plus the client side used by
// `egressd status` and `egressd tail --admin`. Its own endpoints answer
// GET and HEAD only; the daemon mounts the ask: answers (the only POSTs)
// and the web console through Config.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egressd/egressd/internal/shared/declog"
)

// DefaultHeartbeat is how often an idle event stream gets a comment line,
// so a client that went away is noticed and idle proxies keep it open.
const DefaultHeartbeat = 15 * time.Second

// Config wires a Server to the daemon. Zero values are documented per field.
type Config struct {
	// Token, if set, is required as "Authorization: Bearer <token>" on
	// everything except /healthz. "" = no authentication (loopback only!).
	Token string
	// Status supplies the daemon's part of /status (mode, policy, budget,
	// version, start time); the Server adds readiness, counts and recent
	// denials. It is also read once per /metrics scrape for the spend
	// gauges, so it must be cheap. nil = those parts stay empty.
	Status func() Status
	// Subscribe feeds /events; pass (*declog.Logger).Subscribe. nil = /events
	// answers 503.
	Subscribe func(buf int) (<-chan declog.Entry, func())
	// Registry receives the metrics; nil = a new registry with the Go and
	// process collectors. One registry backs one Server.
	Registry *prometheus.Registry
	// TunnelsOpen, if set, is the authoritative open-tunnel count for
	// egressd_tunnels_open; nil = counted from entries (allowed CONNECT
	// decisions minus CONNECT close entries).
	TunnelsOpen func() int
	// Clock stamps entries recorded without a time; nil = time.Now.
	Clock func() time.Time
	// Logger gets the listener's own errors; nil = slog.Default().
	Logger *slog.Logger
	// Heartbeat for /events; 0 = DefaultHeartbeat.
	Heartbeat time.Duration
	// Handlers are more endpoints by exact path, behind the token like
	// the rest; they choose their own methods (the ask: answers are
	// POSTs). nil = none.
	Handlers map[string]http.Handler
	// Console serves "/" and everything under "/console/" itself, with
	// its own authentication (a login form for the same token, or the
	// bearer header a forward-auth proxy adds). nil = 404.
	Console http.Handler
}

// Server is the admin listener's http.Handler and a declog.Recorder.
type Server struct {
	cfg       Config
	clock     func() time.Time
	log       *slog.Logger
	reg       *prometheus.Registry
	metrics   *metrics
	recent    *recent
	metricsH  http.Handler
	ready     atomic.Bool
	closing   chan struct{}
	closeOnce sync.Once
}

// New builds a Server. It is not ready (/readyz 503) until SetReady(true).
func New(cfg Config) *Server {
	s := &Server{
		cfg:     cfg,
		clock:   cfg.Clock,
		log:     cfg.Logger,
		reg:     cfg.Registry,
		recent:  newRecent(DefaultRecentHosts),
		closing: make(chan struct{}),
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.cfg.Heartbeat <= 0 {
		s.cfg.Heartbeat = DefaultHeartbeat
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.metrics = newMetrics(s.reg, cfg.TunnelsOpen)
	s.reg.MustRegister(&budgetCollector{s: s})
	s.metricsH = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{s.log}})
	return s
}

// Record counts one decision-log entry into the metrics, the status counts
// and the recent-denials table. Safe for concurrent use; wire it next to
// the Logger with declog.Tee.
func (s *Server) Record(e declog.Entry) {
	if e.Time.IsZero() {
		e.Time = s.clock()
	}
	s.metrics.record(&e)
	if (e.Event == vocab.EventDecision || e.Event == vocab.EventSummary) && e.Verdict != vocab.Allow {
		n := 1
		if e.Event == vocab.EventSummary {
			n = e.Count
		}
		if n > 0 && e.Host != "" {
			s.recent.add(e.Host, e.Reason.String(), e.Time, n)
		}
		// An overflow summary (Host "*") names a sample of the hosts it
		// folded; each was denied at least once, and is what an operator
		// needs to see behind a flood of one-off names.
		for _, h := range e.Hosts {
			if h != "" {
				s.recent.add(h, e.Reason.String(), e.Time, 1)
			}
		}
	}
}

// ObserveReload counts a policy reload attempt: err == nil is "ok".
func (s *Server) ObserveReload(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.metrics.reloads.WithLabelValues(result).Inc()
}

// SetReady flips /readyz: ready once the policy is loaded and every
// listener is up; not ready again while shutting down.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Close ends every /events stream. http.Server.Shutdown does not cancel
// handlers that never finish, so register it with RegisterOnShutdown (or
// call it before Shutdown). Safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// ServeHTTP routes the admin endpoints. /healthz is open; everything else
// needs the token when one is set. Only GET and HEAD are served.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if s.cfg.Console != nil && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/console/")) {
		s.cfg.Console.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != "/healthz" && !s.authorized(r) {
		h.Set("WWW-Authenticate", `Bearer realm="egressd admin"`)
		http.Error(w, "unauthorized: send Authorization: Bearer <admin token>", http.StatusUnauthorized)
		return
	}
	if eh := s.cfg.Handlers[r.URL.Path]; eh != nil {
		eh.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the admin listener is read-only", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		writeText(w, http.StatusOK, "ok")
	case "/readyz":
		if s.ready.Load() {
			writeText(w, http.StatusOK, "ready")
		} else {
			writeText(w, http.StatusServiceUnavailable, "not ready")
		}
	case "/metrics":
		s.metricsH.ServeHTTP(w, r)
	case "/status":
		s.serveStatus(w)
	case "/events":
		s.serveEvents(w, r)
	default:
		http.NotFound(w, r)
	}
}

// authorized compares in constant time, so the token cannot be guessed a
// byte at a time from response timing.
func (s *Server) authorized(r *http.Request) bool { return BearerOK(r, s.cfg.Token) }

// BearerOK reports whether r carries "Authorization: Bearer <token>"
// (always true when token is ""), compared in constant time.
func BearerOK(r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// Status assembles what /status serves: the daemon's part plus readiness,
// counts and the recent denials.
func (s *Server) Status() Status {
	var st Status
	if s.cfg.Status != nil {
		st = s.cfg.Status()
	}
	now := s.clock()
	m := s.metrics
	st.Now = now
	st.Ready = s.ready.Load()
	st.Counts = Counts{
		Allowed: m.allowed.Load(), Denied: m.denied.Load(), WouldDeny: m.wouldDeny.Load(),
		DNSQueries: m.dns.Load(), TunnelsOpen: m.openTunnels(),
		BytesUp: m.bytesUp.Load(), BytesDown: m.bytesDown.Load(),
	}
	st.RecentDenials = s.recent.top(now, recentTop)
	return st
}

func (s *Server) serveStatus(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.Status()); err != nil {
		s.log.Debug("admin status write failed", "error", err)
	}
}

// budgetCollector exports the spend gauges from one Status call per scrape.
type budgetCollector struct{ s *Server }

var (
	spendDesc = prometheus.NewDesc("egressd_spend_usd",
		"Spend in the current budget period, USD (settled calls).", nil, nil)
	capDesc = prometheus.NewDesc("egressd_cap_usd",
		"Hard spend cap for the current budget period, USD.", nil, nil)
	reservationsDesc = prometheus.NewDesc("egressd_reservations_in_flight",
		"Gateway calls holding a spend reservation right now.", nil, nil)
)

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spendDesc
	ch <- capDesc
	ch <- reservationsDesc
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	var b Budget
	if c.s.cfg.Status != nil {
		if st := c.s.cfg.Status(); st.Budget != nil {
			b = *st.Budget
		}
	}
	ch <- prometheus.MustNewConstMetric(spendDesc, prometheus.GaugeValue, b.SpendUSD)
	ch <- prometheus.MustNewConstMetric(capDesc, prometheus.GaugeValue, b.CapUSD)
	ch <- prometheus.MustNewConstMetric(reservationsDesc, prometheus.GaugeValue, float64(b.ReservationsInFlight))
}

// slogErrorLog adapts slog to promhttp's error logger.
type slogErrorLog struct{ l *slog.Logger }

func (e slogErrorLog) Println(v ...any) {
	e.l.Warn("metrics scrape failed", "error", strings.TrimSpace(fmt.Sprintln(v...)))
}
