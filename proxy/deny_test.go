package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

const providerYAML = `providers:
  prov:
    upstream: https://provider.test
    format: openai
    api_key_env: PROV_KEY
    client_token_env: PROV_TOKEN
budget:
  cap_usd: 5
  ledger: /nonexistent/egressd-proxy-test-ledger.json
`

// denyCase is one request that must be denied: its answer and its log line.
type denyCase struct {
	name       string
	raw        string
	wantStatus int
	wantReason vocab.Reason
	wantHost   string // Host in the decision entry
	wantBody   string // substring of the one-line body
}

// checkDenied sends c.raw on a fresh connection and checks the status, the
// X-Egressd-Reason header, the body and the logged decision.
func checkDenied(t *testing.T, e *env, c denyCase) {
	t.Helper()
	mark := len(e.rec.All())
	resp, body := e.roundTrip(c.raw)
	if resp.StatusCode != c.wantStatus {
		t.Errorf("status: got %d, want %d (body %q)", resp.StatusCode, c.wantStatus, body)
	}
	if got := resp.Header.Get("X-Egressd-Reason"); got != c.wantReason.String() {
		t.Errorf("X-Egressd-Reason: got %q, want %q", got, c.wantReason)
	}
	if got, want := resp.Status, strconv.Itoa(c.wantStatus)+" egressd "+c.wantReason.String()+": "; !strings.HasPrefix(got, want) {
		t.Errorf("status line: got %q, want it to start with %q", got, want)
	}
	if !strings.HasPrefix(body, "egressd: denied ") || !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 {
		t.Errorf("body: got %q, want one line starting with %q", body, "egressd: denied ")
	}
	if !strings.Contains(body, c.wantBody) {
		t.Errorf("body: got %q, want it to contain %q", body, c.wantBody)
	}
	entry := e.rec.WaitFor(t, waitLimit, "decision "+c.wantReason.String(), func(en declog.Entry) bool {
		return en.Event == vocab.EventDecision && en.Reason == c.wantReason
	})
	if entry.Verdict != vocab.Deny || entry.Host != c.wantHost || entry.Status != c.wantStatus || entry.Client != "127.0.0.1" {
		t.Errorf("decision entry: got %+v, want deny %s host %q status %d client 127.0.0.1",
			entry, c.wantReason, c.wantHost, c.wantStatus)
	}
	for _, en := range e.rec.All()[mark:] {
		if en.Event == vocab.EventDecision && en.Verdict.Allowed() {
			t.Errorf("denied request also logged as allowed: %+v", en)
		}
	}
}

func connectReq(target string) string {
	return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
}

func getReq(url, host string) string {
	return "GET " + url + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
}

func TestDenialReasons(t *testing.T) {
	f := newFixture(t, fixOpts{extraTop: providerYAML})
	hp := strconv.Itoa(f.http.port)
	cases := []denyCase{
		{"not allowlisted http", getReq("http://evil.test:"+hp+"/", "evil.test:"+hp), 403, vocab.ReasonNotAllowlisted,
			"evil.test", `add "- {host: evil.test, ports: [` + hp + `]}" under allow: in policy.yaml`},
		{"not allowlisted connect", connectReq("evil.test:443"), 403, vocab.ReasonNotAllowlisted,
			"evil.test", `egressd: denied CONNECT evil.test:443: not_allowlisted — add "- host: evil.test" under allow: in policy.yaml`},
		{"port not allowed", connectReq("granted.test:22"), 403, vocab.ReasonPortNotAllowed,
			"granted.test", "add 22 to ports: of allow[0]"},
		{"ip literal", connectReq("8.8.8.8:443"), 403, vocab.ReasonIPLiteralNotAllowed,
			"8.8.8.8", "cidr: 8.8.8.8/32"},
		{"private address", connectReq(f.ep("private.b.test")), 403, vocab.ReasonPrivateAddress,
			"private.b.test", "networks.allow"},
		{"metadata address", getReq("http://"+f.hp("meta.b.test")+"/latest/meta-data", f.hp("meta.b.test")), 403,
			vocab.ReasonMetadataAddress, "meta.b.test", "can never be granted"},
		{"denied network", connectReq(f.ep("denynet.b.test")), 403, vocab.ReasonDeniedNetwork,
			"denynet.b.test", "networks.deny"},
		{"self address", connectReq("self.test:" + strconv.Itoa(f.port)), 403, vocab.ReasonSelfAddress,
			"self.test", "self_address"},
		{"resolve failed", connectReq(f.ep("fail.b.test")), 502, vocab.ReasonResolveFailed,
			"fail.b.test", "resolve_failed"},
		{"use gateway", connectReq("provider.test:443"), 403, vocab.ReasonUseGateway,
			"provider.test", "gateway at /prov/"},
		{"host mismatch", getReq("http://"+f.hp("granted.test")+"/", f.hp("evil.test")), 403, vocab.ReasonHostMismatch,
			"granted.test", "host_mismatch"},
		{"origin form", getReq("/", f.hp("granted.test")), 400, vocab.ReasonBadRequest,
			"", "not a web server"},
		{"userinfo", getReq("http://granted.test@"+f.hp("evil.test")+"/", f.hp("evil.test")), 400, vocab.ReasonBadRequest,
			"", "userinfo"},
		{"https absolute uri", getReq("https://"+f.tp("granted.test")+"/", f.tp("granted.test")), 400, vocab.ReasonBadRequest,
			"", "use CONNECT"},
		{"connect userinfo", "CONNECT granted.test@evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", 400, vocab.ReasonBadRequest,
			"", "host:port"},
		{"connect without port", connectReq("granted.test"), 400, vocab.ReasonBadRequest,
			"", "host:port"},
		{"malformed host", "CONNECT a..b.test:443 HTTP/1.1\r\nHost: granted.test:443\r\n\r\n", 400, vocab.ReasonBadRequest,
			"", "malformed host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.rec.Reset()
			checkDenied(t, f.env, c)
		})
	}
	if f.http.count() != 0 || f.tls.count() != 0 {
		t.Errorf("upstreams reached by denied requests: http %d, tls %d, want 0", f.http.count(), f.tls.count())
	}
}

func TestRateLimitThenRecovery(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	f := newFixture(t, fixOpts{
		limits: "  client: {rps: 1, burst: 2}\n  host: {rps: 100000, burst: 100000}\n",
		mod:    func(c *Config) { c.Clock = clock.Now },
	})
	url, host := "http://"+f.hp("granted.test")+"/", f.hp("granted.test")
	for i := range 2 {
		if resp, body := f.get(url, host); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within burst: got %d %q, want 200", i, resp.StatusCode, body)
		}
	}
	checkDenied(t, f.env, denyCase{"over", getReq(url, host), 429, vocab.ReasonRateLimited, "", "rate_limited"})
	resp, _ := f.get(url, host)
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After: got %q, want 1", got)
	}
	clock.Advance(time.Second)
	if resp, body := f.get(url, host); resp.StatusCode != http.StatusOK {
		t.Errorf("after refill: got %d %q, want 200", resp.StatusCode, body)
	}
}

func TestHostRateLimitUsesRuleOverride(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	f := newFixture(t, fixOpts{mod: func(c *Config) { c.Clock = clock.Now }})
	slow, slowHost := "http://"+f.hp("slow.test")+"/", f.hp("slow.test")
	if resp, _ := f.get(slow, slowHost); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request to slow.test: got %d, want 200", resp.StatusCode)
	}
	checkDenied(t, f.env, denyCase{"slow again", getReq(slow, slowHost), 429, vocab.ReasonRateLimited,
		"slow.test", "rate_limited"})
	if resp, _ := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test")); resp.StatusCode != http.StatusOK {
		t.Errorf("other host while slow.test is limited: got %d, want 200", resp.StatusCode)
	}
	clock.Advance(time.Second)
	if resp, _ := f.get(slow, slowHost); resp.StatusCode != http.StatusOK {
		t.Errorf("slow.test after refill: got %d, want 200", resp.StatusCode)
	}
}

func TestReportModeRateLimit(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	f := newFixture(t, fixOpts{mode: "report", mod: func(c *Config) { c.Clock = clock.Now }})
	slow, slowHost := "http://"+f.hp("slow.test")+"/", f.hp("slow.test")
	for i := range 2 {
		if resp, _ := f.get(slow, slowHost); resp.StatusCode != http.StatusOK {
			t.Fatalf("report mode request %d: got %d, want 200", i, resp.StatusCode)
		}
	}
	if e := decisionFor(t, f.rec, "slow.test", vocab.ReasonRateLimited); e.Verdict != vocab.Report {
		t.Errorf("verdict: got %v, want would_deny", e.Verdict)
	}
}

func TestConnectionCaps(t *testing.T) {
	f := newFixture(t, fixOpts{
		limits: "  client: {rps: 100000, burst: 100000}\n  host: {rps: 100000, burst: 100000}\n  max_conns_per_client: 1\n",
	})
	a, abr := f.connect(f.ep("granted.test")) // holds the one slot
	echo(t, a, abr, "held")
	b := f.dial() // over the cap: one answer, then closed
	c := f.dial() // over twice the cap: closed at once
	expectClosed(t, c, c)
	f.rec.WaitFor(t, waitLimit, "accept-time rejection", func(e declog.Entry) bool {
		return e.Reason == vocab.ReasonTooManyConnections && e.Host == ""
	})
	resp, body := sendRaw(t, b, bufio.NewReader(b), getReq("http://"+f.hp("granted.test")+"/", f.hp("granted.test")))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Egressd-Reason") != "too_many_connections" ||
		resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("over the cap: got %d %v %q, want 503 too_many_connections with Retry-After and close",
			resp.StatusCode, resp.Header, body)
	}
	a.Close()
	b.Close()
	// Slots come back when connections close. egressd releases them when
	// it sees the close, a moment after this side's Close; until then a new
	// connection is over the cap (503) or over twice the cap (cut at
	// accept, a read error here), so both mean "not yet".
	deadline := time.Now().Add(waitLimit)
	for {
		status := 0
		d := f.dial()
		if _, err := io.WriteString(d, getReq("http://"+f.hp("granted.test")+"/", f.hp("granted.test"))); err == nil {
			if resp, err := http.ReadResponse(bufio.NewReader(d), nil); err == nil {
				status = resp.StatusCode
			}
		}
		_ = d.Close()
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never freed: last status %d", status)
		}
	}
}
