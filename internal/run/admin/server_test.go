package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/egressd/egressd/internal/shared/declog"
)

func TestMain(m *testing.M) {
	time.Local = time.UTC // PrintStatus shows local time; make goldens stable
	os.Exit(m.Run())
}

var t0 = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

func entry(proto vocab.Proto, host string, port uint16, v vocab.Verdict, r vocab.Reason) declog.Entry {
	return declog.Entry{Time: t0, Event: vocab.EventDecision, Client: "10.0.0.2", Proto: proto,
		Host: host, Port: port, Verdict: v, Reason: r}
}

// scrape GETs /metrics and parses it.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsFromEntries(t *testing.T) {
	srv := New(Config{Status: func() Status {
		return Status{Budget: &Budget{SpendUSD: 4.25, CapUSD: 10, ReservationsInFlight: 2}}
	}})
	ts := httptest.NewServer(srv)
	defer ts.Close()

	deny := entry(vocab.ProtoConnect, "evil.example", 443, vocab.Deny, vocab.ReasonNotAllowlisted)
	summary := deny
	summary.Event, summary.Count = vocab.EventSummary, 41
	tunnel := entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted)
	closed := tunnel
	closed.Event, closed.BytesUp, closed.BytesDn = vocab.EventClose, 100, 5000
	for _, e := range []declog.Entry{
		deny, summary,
		tunnel, tunnel, closed, // two opened, one closed
		entry(vocab.ProtoDNS, "pypi.org", 0, vocab.Allow, vocab.ReasonAllowlisted),
		entry(vocab.ProtoDNS, "x.example", 0, vocab.Report, vocab.ReasonNotAllowlisted),
		entry(vocab.ProtoHTTP, "pypi.org", 80, vocab.Deny, vocab.ReasonRateLimited),
		{Event: vocab.EventUsage, Proto: vocab.ProtoGateway, Provider: "openrouter", Verdict: vocab.Allow,
			InputTokens: 1200, OutputTokens: 300},
		{Event: vocab.EventUsage, Proto: vocab.ProtoGateway, Provider: "openrouter", Verdict: vocab.Allow,
			InputTokens: 800},
		{Event: vocab.EventAsk, Proto: vocab.ProtoConnect, Host: "new.example", Port: 443, Verdict: vocab.Deny, Reason: vocab.ReasonApprovalPending},
		{Event: vocab.EventAsk, Proto: vocab.ProtoConnect, Host: "new.example", Port: 443, Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted},
	} {
		srv.Record(e)
	}
	srv.ObserveReload(nil)
	srv.ObserveReload(nil)
	srv.ObserveReload(errors.New("allow[0].host: empty"))

	fams := scrape(t, ts.URL, "")
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"egressd_decisions_total", map[string]string{"proto": "connect", "verdict": "deny", "reason": "not_allowlisted"}, 42},
		{"egressd_decisions_total", map[string]string{"proto": "connect", "verdict": "allow", "reason": "allowlisted"}, 2},
		{"egressd_decisions_total", map[string]string{"proto": "dns", "verdict": "would_deny", "reason": "not_allowlisted"}, 1},
		{"egressd_decisions_total", map[string]string{"proto": "http", "verdict": "deny", "reason": "rate_limited"}, 1},
		{"egressd_dns_queries_total", map[string]string{"verdict": "allow", "reason": "allowlisted"}, 1},
		{"egressd_dns_queries_total", map[string]string{"verdict": "would_deny", "reason": "not_allowlisted"}, 1},
		{"egressd_ratelimit_hits_total", map[string]string{"proto": "http"}, 1},
		{"egressd_bytes_total", map[string]string{"direction": "up"}, 100},
		{"egressd_bytes_total", map[string]string{"direction": "down"}, 5000},
		{"egressd_tunnels_open", nil, 1},
		{"egressd_gateway_tokens_total", map[string]string{"provider": "openrouter", "direction": "input"}, 2000},
		{"egressd_gateway_tokens_total", map[string]string{"provider": "openrouter", "direction": "output"}, 300},
		{"egressd_ask_events_total", map[string]string{"verdict": "deny", "reason": "approval_pending"}, 1},
		{"egressd_ask_events_total", map[string]string{"verdict": "allow", "reason": "allowlisted"}, 1},
		{"egressd_policy_reloads_total", map[string]string{"result": "ok"}, 2},
		{"egressd_policy_reloads_total", map[string]string{"result": "error"}, 1},
		{"egressd_spend_usd", nil, 4.25},
		{"egressd_cap_usd", nil, 10},
		{"egressd_reservations_in_flight", nil, 2},
	}
	for _, tc := range tests {
		got, ok := value(fams, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (found %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Errorf("default registry lacks the Go collector")
	}
}

func TestTunnelsOpenFromDaemon(t *testing.T) {
	srv := New(Config{TunnelsOpen: func() int { return 7 }})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	srv.Record(entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted))
	if got, _ := value(scrape(t, ts.URL, ""), "egressd_tunnels_open", nil); got != 7 {
		t.Errorf("egressd_tunnels_open = %v, want the daemon's 7", got)
	}
	if got := srv.Status().Counts.TunnelsOpen; got != 7 {
		t.Errorf("status tunnels_open = %d, want 7", got)
	}
}

func TestProviderLabelBounded(t *testing.T) {
	srv := New(Config{})
	for i := range maxProviders + 10 {
		srv.Record(declog.Entry{Event: vocab.EventUsage, Provider: fmt.Sprintf("p%d", i), InputTokens: 1})
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	fams := scrape(t, ts.URL, "")
	if n := len(fams["egressd_gateway_tokens_total"].GetMetric()); n != maxProviders+1 {
		t.Errorf("got %d provider series, want %d (bound + other)", n, maxProviders+1)
	}
	if got, _ := value(fams, "egressd_gateway_tokens_total", map[string]string{"provider": "other"}); got != 10 {
		t.Errorf("other = %v, want 10", got)
	}
}

func do(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReadyz(t *testing.T) {
	srv := New(Config{})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	steps := []struct {
		set   *bool
		want  int
		wantH int
	}{
		{nil, http.StatusServiceUnavailable, http.StatusOK},
		{ptr(true), http.StatusOK, http.StatusOK},
		{ptr(false), http.StatusServiceUnavailable, http.StatusOK},
	}
	for i, st := range steps {
		if st.set != nil {
			srv.SetReady(*st.set)
		}
		if code, _ := do(t, http.MethodGet, ts.URL+"/readyz", ""); code != st.want {
			t.Errorf("step %d: /readyz = %d, want %d", i, code, st.want)
		}
		if code, _ := do(t, http.MethodGet, ts.URL+"/healthz", ""); code != st.wantH {
			t.Errorf("step %d: /healthz = %d, want %d", i, code, st.wantH)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestTokenAndMethods(t *testing.T) {
	const token = "s3cret-admin-token"
	srv := New(Config{Token: token, Subscribe: func(int) (<-chan declog.Entry, func()) {
		ch := make(chan declog.Entry)
		close(ch) // ends the stream at once
		return ch, func() {}
	}})
	srv.SetReady(true)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	tests := []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "wrong", 401},
		{"GET", "/metrics", token + "x", 401},
		{"GET", "/metrics", token, 200},
		{"GET", "/status", "", 401},
		{"GET", "/status", token, 200},
		{"GET", "/readyz", "", 401},
		{"GET", "/readyz", token, 200},
		{"GET", "/events", "", 401},
		{"GET", "/events", token, 200},
		{"GET", "/nope", "", 401},
		{"GET", "/nope", token, 404},
		{"POST", "/status", token, 405},
		{"PUT", "/metrics", token, 405},
		{"DELETE", "/healthz", "", 405},
		{"POST", "/status", "", 401},
		{"HEAD", "/status", token, 200},
	}
	for _, tc := range tests {
		if code, _ := do(t, tc.method, ts.URL+tc.path, tc.token); code != tc.want {
			t.Errorf("%s %s (token %q) = %d, want %d", tc.method, tc.path, tc.token, code, tc.want)
		}
	}
	// A token that is not "Bearer" is refused too.
	req, _ := http.NewRequest("GET", ts.URL+"/status", nil)
	req.Header.Set("Authorization", "Basic "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("Basic auth: got %v %v, want 401", resp.StatusCode, err)
	}
	if _, err := FetchStatus(context.Background(), ts.URL, "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("FetchStatus with a wrong token: got %v, want ErrUnauthorized", err)
	}
	if err := Stream(context.Background(), ts.URL, "", func(declog.Entry) error { return nil }); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Stream without token: got %v, want ErrUnauthorized", err)
	}
}

func TestEventsNotWired(t *testing.T) {
	ts := httptest.NewServer(New(Config{}))
	defer ts.Close()
	if code, _ := do(t, "GET", ts.URL+"/events", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/events without Subscribe = %d, want 503", code)
	}
}

func TestEndpointURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:9090", "http://127.0.0.1:9090/status"},
		{"http://127.0.0.1:9090/", "http://127.0.0.1:9090/status"},
		{"https://admin.local", "https://admin.local/status"},
		{"ftp://x", ""},
		{"http://", ""},
	}
	for _, tc := range tests {
		got, err := endpoint(tc.in, "/status")
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("endpoint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func BenchmarkServerRecord(b *testing.B) {
	srv := New(Config{})
	cases := []struct {
		name string
		e    declog.Entry
	}{
		{"allow", entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted)},
		{"deny", entry(vocab.ProtoConnect, "evil.example", 443, vocab.Deny, vocab.ReasonNotAllowlisted)},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					srv.Record(bc.e)
				}
			})
		})
	}
}
