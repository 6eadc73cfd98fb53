package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/shared/declog"
)

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestRecentWindowAndBound(t *testing.T) {
	r := newRecent(3)
	r.add("a.example", "not_allowlisted", t0, 5)
	r.add("b.example", "port_not_allowed", t0.Add(10*time.Minute), 2)
	r.add("a.example", "rate_limited", t0.Add(20*time.Minute), 1)
	r.add("c.example", "not_allowlisted", t0.Add(20*time.Minute), 1)
	r.add("d.example", "not_allowlisted", t0.Add(21*time.Minute), 4) // table full: other
	r.add("e.example", "not_allowlisted", t0.Add(22*time.Minute), 1) // other
	tests := []struct {
		at   time.Time
		want []HostCount
	}{
		{t0.Add(30 * time.Minute), []HostCount{
			{"a.example", 6, "rate_limited", t0.Add(20 * time.Minute), reasons("not_allowlisted", 5, "rate_limited", 1)},
			{"b.example", 2, "port_not_allowed", t0.Add(10 * time.Minute), reasons("port_not_allowed", 2)},
			{"c.example", 1, "not_allowlisted", t0.Add(20 * time.Minute), reasons("not_allowlisted", 1)},
			{OtherHosts, 5, "not_allowlisted", t0.Add(22 * time.Minute), reasons("not_allowlisted", 5)},
		}},
		// 65 minutes on, the first 5-minute bucket (t0) has left the window.
		{t0.Add(65 * time.Minute), []HostCount{
			{"b.example", 2, "port_not_allowed", t0.Add(10 * time.Minute), reasons("port_not_allowed", 2)},
			{"a.example", 1, "rate_limited", t0.Add(20 * time.Minute), reasons("rate_limited", 1)},
			{"c.example", 1, "not_allowlisted", t0.Add(20 * time.Minute), reasons("not_allowlisted", 1)},
			{OtherHosts, 5, "not_allowlisted", t0.Add(22 * time.Minute), reasons("not_allowlisted", 5)},
		}},
		{t0.Add(3 * time.Hour), nil},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, r.top(tc.at, 10)); diff != "" {
			t.Errorf("top at %v (-want +got):\n%s", tc.at, diff)
		}
	}
	// Once the old hosts age out, new hosts get rows again.
	late := t0.Add(3 * time.Hour)
	r.add("f.example", "not_allowlisted", late, 1)
	if got := r.top(late, 10); len(got) != 1 || got[0].Host != "f.example" {
		t.Errorf("after pruning: got %v, want f.example", got)
	}
}

// reasons builds a ReasonCount list from reason, count pairs.
func reasons(pairs ...any) []ReasonCount {
	var out []ReasonCount
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, ReasonCount{Reason: pairs[i].(string), Count: pairs[i+1].(int)})
	}
	return out
}

func TestRecentTopLimit(t *testing.T) {
	r := newRecent(100)
	for i := range 30 {
		r.add(fmt.Sprintf("h%02d.example", i), "not_allowlisted", t0, i+1)
	}
	got := r.top(t0, 20)
	if len(got) != 21 || got[0].Host != "h29.example" || got[20].Host != OtherHosts || got[20].Count != 55 {
		t.Errorf("got %d rows, first %v, last %v; want 21 rows, h29 first, other = 1+..+10 = 55", len(got), got[0], got[len(got)-1])
	}
	if diff := cmp.Diff(reasons("not_allowlisted", 55), got[len(got)-1].Reasons); diff != "" {
		t.Errorf("other row's reasons (-want +got):\n%s", diff)
	}
}

func TestFetchStatus(t *testing.T) {
	daemon := Status{
		Version: "egressd test", StartedAt: t0.Add(-2 * time.Hour), Mode: "report",
		Policy: PolicyStatus{File: "/etc/egressd/policy.yaml", Hash: "3f2a9c1e", LoadedAt: t0.Add(-time.Hour), Rules: 8,
			LastReloadAt: t0.Add(-10 * time.Minute), LastReloadError: "allow[3].host: empty label"},
		Budget: &Budget{SpendUSD: 4, CapUSD: 10, WarnAt: 0.8, Period: "month", PeriodEnd: t0.Add(72 * time.Hour)},
	}
	srv := New(Config{Token: "t", Status: func() Status { return daemon }, Clock: func() time.Time { return t0 }})
	srv.SetReady(true)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	srv.Record(entry(vocab.ProtoConnect, "evil.example", 443, vocab.Report, vocab.ReasonNotAllowlisted))
	srv.Record(entry(vocab.ProtoConnect, "pypi.org", 443, vocab.Allow, vocab.ReasonAllowlisted))
	noTime := entry(vocab.ProtoDNS, "x.example", 0, vocab.Deny, vocab.ReasonQTypeNotAllowed)
	noTime.Time = time.Time{} // stamped with the Server's clock
	srv.Record(noTime)

	got, err := FetchStatus(context.Background(), ts.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	want := daemon
	want.Now, want.Ready = t0, true
	want.Counts = Counts{Allowed: 1, Denied: 1, WouldDeny: 1, DNSQueries: 1, TunnelsOpen: 2}
	want.RecentDenials = []HostCount{
		{"evil.example", 1, "not_allowlisted", t0, reasons("not_allowlisted", 1)},
		{"x.example", 1, "qtype_not_allowed", t0, reasons("qtype_not_allowed", 1)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

func TestStatusJSONKeys(t *testing.T) {
	b, err := json.Marshal(New(Config{}).Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"ready":false`, `"policy":{"file":""`, `"counts":{"allowed":0`, `"recent_denials":null`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("status JSON %s lacks %s", b, key)
		}
	}
	if strings.Contains(string(b), `"budget"`) {
		t.Errorf("status JSON %s has a budget without providers", b)
	}
}

func TestPrintStatus(t *testing.T) {
	st := Status{
		Now: t0, Ready: true, Version: "v0.1.0", StartedAt: t0.Add(-26 * time.Hour), Mode: "enforce",
		Policy: PolicyStatus{File: "/etc/egressd/policy.yaml", Hash: "3f2a9c1e", LoadedAt: t0.Add(-69 * time.Minute), Rules: 8,
			LastReloadAt: t0.Add(-5 * time.Minute), LastReloadError: "allow[3].host: \"*.\": empty label"},
		Counts: Counts{Allowed: 1234, Denied: 56, DNSQueries: 789, TunnelsOpen: 3, BytesUp: 1 << 20, BytesDown: 34 << 20},
		Budget: &Budget{SpendUSD: 8.5, CapUSD: 10, WarnAt: 0.8, Period: "month", PeriodEnd: t0.Add(17*24*time.Hour + 12*time.Hour), ReservationsInFlight: 2},
		RecentDenials: []HostCount{
			{"evil.example", 42, "rate_limited", t0.Add(-2 * time.Minute), reasons("not_allowlisted", 40, "rate_limited", 2)},
			{"\x1b[2Jsneaky.example", 1, "not_allowlisted", t0.Add(-3 * time.Minute), reasons("not_\x1ballowlisted", 1)},
		},
	}
	want := `egressd   ready, mode enforce, up 1d2h, v0.1.0
policy    /etc/egressd/policy.yaml, 8 allow rules, hash 3f2a9c1e, loaded 2025-03-14 10:51:00 (1h9m ago)
reload    FAILED at 2025-03-14 11:55:00: allow[3].host: "*.": empty label; the policy above is still in force
traffic   1234 allowed, 56 denied, 0 would-deny; 789 DNS queries; 3 tunnels open; up 1.0MiB, down 34.0MiB
spend     [##########################----] $8.50 of $10.00 (85%) this month, resets 2025-04-01 00:00 UTC (in 17d12h); 2 calls in flight
denials in the last hour, by host:
       42  evil.example                             last 2025-03-14 11:58:00  not_allowlisted 40, rate_limited 2
        1  "\x1b[2Jsneaky.example"                  last 2025-03-14 11:57:00  "not_\x1ballowlisted"
`
	var b bytes.Buffer
	if err := PrintStatus(&b, st, false); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("PrintStatus (-want +got):\n%s", diff)
	}
	b.Reset()
	PrintStatus(&b, st, true)
	if !strings.Contains(b.String(), ansiYel+strings.Repeat("#", 26)+ansiReset) || !strings.Contains(b.String(), ansiRed+"FAILED") {
		t.Errorf("colour: want a yellow bar past warn_at and a red FAILED:\n%q", b.String())
	}
	// Only our own escapes reach the terminal.
	if n := len(regexp.MustCompile("\x1b").FindAllString(b.String(), -1)); n != 6 {
		t.Errorf("got %d escapes, want 6 (ready, FAILED, bar, each opened and reset)", n)
	}
}

func TestPrintStatusBudgets(t *testing.T) {
	tests := []struct {
		name   string
		budget *Budget
		want   string
	}{
		{"none", nil, "spend     no LLM providers configured\n"},
		{"zero cap", &Budget{SpendUSD: 0}, "spend     $0.00, cap $0: gateway calls are refused\n"},
		{"over", &Budget{SpendUSD: 12, CapUSD: 10, Period: "total"},
			"spend     [" + strings.Repeat("#", 30) + "] $12.00 of $10.00 (120%) in total, never resets\n"},
		{"cents", &Budget{SpendUSD: 1.23456, CapUSD: 20, Period: "day"},
			"spend     [##" + strings.Repeat("-", 28) + "] $1.23 of $20.00 (6%) this day\n"},
		{"below a dollar", &Budget{SpendUSD: 0.0123456, CapUSD: 20, Period: "day"},
			"spend     [" + strings.Repeat("-", 30) + "] $0.01235 of $20.00 (0%) this day\n"},
		{"cap below a cent", &Budget{SpendUSD: 0.0004, CapUSD: 0.001, Period: "month"},
			"spend     [############------------------] $0.0004 of $0.001 (40%) this month\n"},
		{"spent, cap zero", &Budget{SpendUSD: 0.25}, "spend     $0.25, cap $0: gateway calls are refused\n"},
		{"empty", &Budget{CapUSD: 5, Period: "day"}, "spend     [" + strings.Repeat("-", 30) + "] $0.00 of $5.00 (0%) this day\n"},
		{"named", &Budget{SpendUSD: 1, CapUSD: 2, Period: "day", Name: "hermes-1"}, "(50%) this day (budget hermes-1)\n"},
		{"shared", &Budget{SpendUSD: 1, CapUSD: 2, Name: "hermes-1", Shared: &SharedBudget{Name: "team", SpendUSD: 30, CapUSD: 120}},
			"shared    $30.00 of $120.00 (25%) across budget team\n"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		PrintStatus(&b, Status{Now: t0, Budget: tc.budget}, false)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s: got\n%s\nwant a line %q", tc.name, b.String(), tc.want)
		}
	}
}

// TestDashboardUsesExportedMetrics keeps compose/grafana-dashboard.json in
// step with what /metrics exports.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../../compose/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	srv := New(Config{})
	srv.Record(declog.Entry{Event: vocab.EventClose, BytesUp: 1, BytesDn: 1})
	srv.Record(declog.Entry{Event: vocab.EventUsage, Provider: "p", InputTokens: 1, OutputTokens: 1})
	srv.Record(entry(vocab.ProtoDNS, "a", 0, vocab.Deny, vocab.ReasonRateLimited))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	fams := scrape(t, ts.URL, "")
	names := regexp.MustCompile(`egressd_[a-z_]+`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 && p.Title != "" {
			continue // rows
		}
		for _, tg := range p.Targets {
			for _, n := range names.FindAllString(tg.Expr, -1) {
				used[n] = true
				if fams[n] == nil {
					t.Errorf("panel %q uses %s, which /metrics does not export", p.Title, n)
				}
			}
		}
	}
	var unused []string
	for n := range fams {
		if strings.HasPrefix(n, "egressd_") && !used[n] {
			unused = append(unused, n)
		}
	}
	slices.Sort(unused)
	if len(unused) > 0 {
		t.Errorf("metrics on no dashboard panel: %v", unused)
	}
}

// TestRecentCountsOverflowSample: the hosts an overflow summary samples
// show up in the recent-denials table next to the folded total.
func TestRecentCountsOverflowSample(t *testing.T) {
	srv := New(Config{Clock: func() time.Time { return t0 }})
	srv.Record(declog.Entry{Time: t0, Event: vocab.EventSummary, Client: "*", Proto: vocab.ProtoDNS, Host: "*",
		Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted, Count: 5000,
		Hosts: []string{"target.example", "f0.example"}, Clients: []string{"10.0.0.2"}})
	want := []HostCount{
		{"*", 5000, "not_allowlisted", t0, reasons("not_allowlisted", 5000)},
		{"f0.example", 1, "not_allowlisted", t0, reasons("not_allowlisted", 1)},
		{"target.example", 1, "not_allowlisted", t0, reasons("not_allowlisted", 1)},
	}
	if diff := cmp.Diff(want, srv.Status().RecentDenials); diff != "" {
		t.Errorf("recent denials (-want +got):\n%s", diff)
	}
}
