package console

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/policy"
)

const token = "console-test-token"

// rig is a console over a real ask: broker, behind the admin listener's
// routing, on loopback.
type rig struct {
	srv    *httptest.Server
	broker *ask.Broker
	pol    *policy.Policy
}

func newRig(t *testing.T) *rig {
	t.Helper()
	base, err := policy.LoadBytes([]byte("version: 1\nask: {hold: 30s}\nallow: [{host: pypi.org}, {host: api.github.com}]\n"), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{pol: base}
	cur := base
	r.broker = ask.New(ask.Config{Policy: func() *policy.Policy { return cur }, Logger: slog.New(slog.DiscardHandler),
		Apply: func(o *policy.Overlay) { cur = base.WithOverlay(o) }})
	start := time.Now().Add(-6 * 24 * time.Hour)
	spend := &Spend{CapUSD: 20, WarnAt: 0.8, SpentUSD: 13.4, Period: "month", Start: start, End: start.Add(30 * 24 * time.Hour),
		Points: []Point{{start.Add(24 * time.Hour), 2.1}, {start.Add(3 * 24 * time.Hour), 7.9}, {start.Add(5 * 24 * time.Hour), 11.2}},
		Models: []Model{{"anthropic/claude-sonnet-4.5", 9.8, 412}, {"openai/gpt-4o-mini", 3.6, 1290}}}
	c := New(Config{
		Token: token,
		Status: func() admin.Status {
			return admin.Status{Ready: true, Mode: "enforce", Ask: &admin.AskStatus{Pending: len(r.broker.Pending())},
				Policy: admin.PolicyStatus{File: "/etc/egressd/policy.yaml", Hash: "3f2a9c", LoadedAt: time.Now().Add(-time.Hour),
					LastReloadAt: time.Now().Add(-time.Minute), LastReloadError: `allow[3].host: "*.": empty label`},
				RecentDenials: []admin.HostCount{{Host: "evil.example", Count: 14, LastReason: "not_allowlisted", LastSeen: time.Now()},
					{Host: "<b>x</b>.example", Count: 1, LastReason: "not_allowlisted", LastSeen: time.Now()}}}
		},
		Broker: r.broker,
		Spend:  func() *Spend { return spend },
		Rules: func() []string {
			var out []string
			for _, rl := range base.Rules() {
				out = append(out, rl.String())
			}
			return out
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	adm := admin.New(admin.Config{Token: token, Console: c, Handlers: r.broker.Handlers(), Logger: slog.New(slog.DiscardHandler)})
	r.srv = httptest.NewServer(adm)
	t.Cleanup(r.srv.Close)
	return r
}

// hold raises a question the way the proxy does and reports the outcome.
func (r *rig) hold(host string) <-chan vocab.Reason {
	ch := make(chan vocab.Reason, 1)
	req := policy.Request{Client: netip.MustParseAddr("172.20.0.5"), Host: host, Port: 443, Proto: vocab.ProtoConnect}
	go func() {
		reason, _, _ := r.broker.Hold(context.Background(), req, r.pol.Decide(req))
		ch <- reason
	}()
	return ch
}

func (r *rig) waitPending(t *testing.T, n int) []ask.Question {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := r.broker.Pending()
		if len(p) == n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending: %d, want %d", len(p), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

func TestLoginAndHeaders(t *testing.T) {
	r := newRig(t)
	c := client(t)
	resp, err := c.Get(r.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page := body(t, resp)
	if resp.StatusCode != 401 || !strings.Contains(page, `name="token"`) || strings.Contains(page, "evil.example") {
		t.Errorf("without a session: %d, want 401 and the login form only", resp.StatusCode)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP: %q", csp)
	}
	resp, _ = c.PostForm(r.srv.URL+PathLogin, url.Values{"token": {"wrong"}})
	if resp.StatusCode != 401 || !strings.Contains(body(t, resp), "wrong token") {
		t.Errorf("wrong token: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(r.srv.URL+PathLogin, url.Values{"token": {token}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, _ = c.Get(r.srv.URL + "/")
	page = body(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(page, "evil.example") || !strings.Contains(page, "&lt;b&gt;x&lt;/b&gt;.example") {
		t.Errorf("after login: %d; page escapes hosts: %v", resp.StatusCode, strings.Contains(page, "&lt;b&gt;"))
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "style=") {
		t.Errorf("page has a script or an inline style")
	}
	// A forward-auth proxy's bearer header works without the login.
	req, _ := http.NewRequest("GET", r.srv.URL+"/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, _ = http.DefaultClient.Do(req)
	if resp.StatusCode != 200 {
		t.Errorf("bearer: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestAnswerNeedsCSRF(t *testing.T) {
	r := newRig(t)
	held := r.hold("csrf.example")
	q := r.waitPending(t, 1)[0]
	c := client(t)
	resp, _ := c.PostForm(r.srv.URL+PathLogin, url.Values{"token": {token}})
	resp.Body.Close()
	resp, _ = c.Get(r.srv.URL + "/")
	page := body(t, resp)
	i := strings.Index(page, `name="csrf" value="`)
	if i < 0 {
		t.Fatal("no csrf field on the page")
	}
	csrf := page[i+len(`name="csrf" value="`):]
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	for _, tt := range []struct {
		name   string
		form   url.Values
		origin string
		want   int
	}{
		{"no token", url.Values{"id": {q.ID}, "answer": {"once"}}, "", 403},
		{"forged token", url.Values{"id": {q.ID}, "answer": {"once"}, "csrf": {strings.Repeat("0", 64)}}, "", 403},
		{"other origin", url.Values{"id": {q.ID}, "answer": {"once"}, "csrf": {csrf}}, "https://evil.example", 403},
		{"bad answer", url.Values{"id": {q.ID}, "answer": {"maybe"}, "csrf": {csrf}}, "", 400},
	} {
		req, _ := http.NewRequest("POST", r.srv.URL+PathAnswer, strings.NewReader(tt.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	if len(r.broker.Pending()) != 1 {
		t.Fatalf("a refused form answered the question")
	}
	// Without the session cookie the same form is refused too.
	req, _ := http.NewRequest("POST", r.srv.URL+PathAnswer, strings.NewReader(url.Values{"id": {q.ID}, "answer": {"once"}, "csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 401 {
		t.Errorf("no session: %d, want 401", resp.StatusCode)
	}
	resp, _ = c.PostForm(r.srv.URL+PathAnswer, url.Values{"id": {q.ID}, "answer": {"deny"}, "csrf": {csrf}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || <-held != vocab.ReasonOperatorDenied {
		t.Errorf("a good form: %d", resp.StatusCode)
	}
}
