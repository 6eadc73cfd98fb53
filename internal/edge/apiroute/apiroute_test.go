package apiroute

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/egressd/egressd/internal/shared/declog/declogtest"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

const (
	agentToken = "agent-token-0123456789"
	ghSecret   = "ghp_S3cretTokenThatMustNeverLeak0123"
)

// fakeGitHub answers the few REST calls the tests make the way GitHub's
// REST API documents them (JSON bodies, 201 for a created comment), and
// echoes the Authorization it received in a header and in the body, as a
// careless or hostile upstream might.
type fakeGitHub struct {
	hits     atomic.Int64
	mu       sync.Mutex
	lastAuth string
	lastURI  string
	lastHdr  http.Header
}

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.mu.Lock()
	f.lastAuth, f.lastURI, f.lastHdr = r.Header.Get("Authorization"), r.URL.RequestURI(), r.Header.Clone()
	f.mu.Unlock()
	auth := r.Header.Get("Authorization")
	w.Header().Set("X-Echo-Auth", auth)
	w.Header().Set("X-Ok", "1")
	w.Header().Set("Set-Cookie", "session=opened-for-the-secret")
	switch {
	case r.URL.Path == "/repos/acme/app/issues" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprintf(w, `[{"number":1,"title":"bug","debug":%q}]`, auth)
	case strings.HasSuffix(r.URL.Path, "/comments") && r.Method == http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":1,"body":%q,"token_seen":%q}`, body, strings.TrimPrefix(auth, "Bearer "))
	case r.URL.Path == "/repos/acme/app/issues/9":
		http.Redirect(w, r, "/repos/acme/app/issues/1?x=1", http.StatusMovedPermanently)
	case r.URL.Path == "/repos/acme/app/issues/8":
		http.Redirect(w, r, "https://elsewhere.example/x", http.StatusFound)
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found"}`)
	}
}

type rig struct {
	upstream *httptest.Server
	api      *fakeGitHub
	gateway  *httptest.Server
	rec      *declogtest.Recorder
}

// newRig starts the fake API over TLS on loopback, writes its CA to a
// file the route names, and serves the handler on a plain-HTTP loopback
// listener as the daemon's gateway listener does.
func newRig(t *testing.T, extra string) *rig {
	t.Helper()
	g := &rig{api: &fakeGitHub{}, rec: &declogtest.Recorder{}}
	g.upstream = httptest.NewTLSServer(g.api)
	t.Cleanup(g.upstream.Close)
	ca := writeCA(t, g.upstream)
	y := fmt.Sprintf(`version: 1
networks: {allow: [127.0.0.0/8]}
apis:
  github:
    upstream: %s
    ca_file: %s
    client_token_env: AGENT
    secret: {header: Authorization, prefix: "Bearer ", env: GH}
    allow:
      - {methods: [GET], paths: ["/repos/acme/app/issues", "/repos/acme/app/issues/*"]}
      - {methods: [POST], paths: ["/repos/acme/app/issues/*/comments"]}
%s`, g.upstream.URL, ca, extra)
	pol, err := policy.LoadBytes([]byte(y), "test.yaml")
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	env := map[string]string{"AGENT": agentToken, "GH": ghSecret}
	h := New(Config{Policy: func() *policy.Policy { return pol }, Recorder: g.rec,
		Env: func(k string) string { return env[k] }, Logger: quiet})
	g.gateway = httptest.NewServer(h)
	t.Cleanup(g.gateway.Close)
	return g
}

func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (g *rig) do(t *testing.T, method, path, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, g.gateway.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHeadersThatWidenTheRoute: headers that would let an echo of the
// secret come back in pieces (ranges), turn an allowed method into another
// (method overrides) or carry a session (cookies) never cross the route.
func TestHeadersThatWidenTheRoute(t *testing.T) {
	g := newRig(t, "")
	req, err := http.NewRequest("GET", g.gateway.URL+"/github/repos/acme/app/issues", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+agentToken)
	dropped := map[string]string{
		"Range": "bytes=0-29,30-200", "If-Range": "x", "X-HTTP-Method-Override": "DELETE",
		"X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE", "Cookie": "session=stolen",
	}
	for k, v := range dropped {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	g.api.mu.Lock()
	hdr := g.api.lastHdr
	g.api.mu.Unlock()
	for k := range dropped {
		if got := hdr.Get(k); got != "" {
			t.Errorf("upstream saw %s: %q, want it dropped", k, got)
		}
	}
	if got := resp.Header.Get("Set-Cookie"); got != "" {
		t.Errorf("client got Set-Cookie %q, want it dropped", got)
	}
}

// noSecret fails when the secret appears anywhere in what the client got.
func noSecret(t *testing.T, what string, resp *http.Response, body string) {
	t.Helper()
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	if strings.Contains(hdr.String(), ghSecret) || strings.Contains(body, ghSecret) {
		t.Errorf("%s: the secret reached the client:\n%s\n%s", what, hdr.String(), body)
	}
}

func TestAllowedCallsCarryTheSecret(t *testing.T) {
	g := newRig(t, "")
	tests := []struct {
		method, path, body string
		status             int
		upstreamURI        string
	}{
		{"GET", "/github/repos/acme/app/issues?state=open", "", 200, "/repos/acme/app/issues?state=open"},
		{"GET", "/GitHub//repos/acme/app/%69ssues/", "", 200, "/repos/acme/app/issues"},
		{"POST", "/github/repos/acme/app/issues/7/comments", `{"body":"hi"}`, 201, "/repos/acme/app/issues/7/comments"},
	}
	for _, tt := range tests {
		resp, body := g.do(t, tt.method, tt.path, agentToken, tt.body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tt.method, tt.path, resp.StatusCode, tt.status, body)
			continue
		}
		g.api.mu.Lock()
		auth, uri, hdr := g.api.lastAuth, g.api.lastURI, g.api.lastHdr
		g.api.mu.Unlock()
		if auth != "Bearer "+ghSecret {
			t.Errorf("%s %s: upstream saw Authorization %q, want the injected secret", tt.method, tt.path, auth)
		}
		if uri != tt.upstreamURI {
			t.Errorf("%s %s: upstream saw %s, want %s", tt.method, tt.path, uri, tt.upstreamURI)
		}
		if strings.Contains(fmt.Sprint(hdr), agentToken) {
			t.Errorf("%s %s: the agent token went upstream: %v", tt.method, tt.path, hdr)
		}
		if resp.Header.Get("X-Ok") != "1" {
			t.Errorf("%s %s: upstream headers not passed on: %v", tt.method, tt.path, resp.Header)
		}
		if resp.Header.Get("X-Echo-Auth") != "" {
			t.Errorf("%s %s: a header carrying the secret was passed on", tt.method, tt.path)
		}
		if !strings.Contains(body, "[egressd:redacted]") {
			t.Errorf("%s %s: body %q, want the echoed secret masked", tt.method, tt.path, body)
		}
		noSecret(t, tt.method+" "+tt.path, resp, body)
	}
}

func TestRefusalsReachNothing(t *testing.T) {
	g := newRig(t, "")
	tests := []struct {
		name, method, path, token string
		status                    int
		reason, inBody            string
	}{
		{"no token", "GET", "/github/repos/acme/app/issues", "", 401, "unauthorized", "missing agent token"},
		{"wrong token", "GET", "/github/repos/acme/app/issues", "nope", 401, "unauthorized", "wrong agent token"},
		{"the secret as token", "GET", "/github/repos/acme/app/issues", ghSecret, 401, "unauthorized", "wrong agent token"},
		{"method", "DELETE", "/github/repos/acme/app/issues/1", agentToken, 403, "path_not_allowed",
			`DELETE /repos/acme/app/issues/1 is not allowed on route github; add "- {methods: [DELETE], paths: ["/repos/acme/app/issues/1"]}" under apis.github.allow:`},
		{"other repo", "GET", "/github/repos/acme/other/issues", agentToken, 403, "path_not_allowed", `paths: ["/repos/acme/other/issues"]`},
		{"create issue", "POST", "/github/repos/acme/app/issues", agentToken, 403, "path_not_allowed", "POST /repos/acme/app/issues"},
		{"dot segments", "GET", "/github/repos/acme/app/issues/%2e%2e/%2e%2e/other/issues", agentToken, 400, "bad_request", ". or .. segment"},
		{"encoded slash", "GET", "/github/repos/acme%2fother/issues", agentToken, 400, "bad_request", "encoding"},
		{"no route", "GET", "/gitlab/x", agentToken, 404, "not_allowlisted", "no api route"},
	}
	for _, tt := range tests {
		before := g.api.hits.Load()
		resp, body := g.do(t, tt.method, tt.path, tt.token, "")
		if resp.StatusCode != tt.status || resp.Header.Get("X-Egressd-Reason") != tt.reason || !strings.Contains(body, tt.inBody) {
			t.Errorf("%s: got %d %s %q, want %d %s containing %q", tt.name, resp.StatusCode,
				resp.Header.Get("X-Egressd-Reason"), body, tt.status, tt.reason, tt.inBody)
		}
		if tt.status == 401 {
			if got, want := resp.Header.Get("WWW-Authenticate"), `Basic realm="egressd github"`; got != want {
				t.Errorf("%s: WWW-Authenticate %q, want %q", tt.name, got, want)
			}
		}
		if n := g.api.hits.Load() - before; n != 0 {
			t.Errorf("%s: %d requests reached the upstream, want 0", tt.name, n)
		}
		noSecret(t, tt.name, resp, body)
	}
}

// TestBasicAuthAgentToken: git sends the agent token as a basic-auth
// password after the 401 challenge; any user name is accepted.
func TestBasicAuthAgentToken(t *testing.T) {
	g := newRig(t, "")
	req, _ := http.NewRequest("GET", g.gateway.URL+"/github/repos/acme/app/issues", nil)
	req.SetBasicAuth("agent", agentToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("basic auth agent token: status %d, want 200", resp.StatusCode)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	g := newRig(t, "")
	tests := []struct{ path, location string }{
		{"/github/repos/acme/app/issues/9", "/github/repos/acme/app/issues/1?x=1"},
		{"/github/repos/acme/app/issues/8", "https://elsewhere.example/x"},
	}
	for _, tt := range tests {
		before := g.api.hits.Load()
		resp, _ := g.do(t, "GET", tt.path, agentToken, "")
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != tt.location {
			t.Errorf("%s: %d Location %q, want a 3xx to %q", tt.path, resp.StatusCode, resp.Header.Get("Location"), tt.location)
		}
		if n := g.api.hits.Load() - before; n != 1 {
			t.Errorf("%s: upstream got %d requests, want 1 (redirect not followed)", tt.path, n)
		}
	}
}

func TestRateAndBodyLimits(t *testing.T) {
	g := newRig(t, "    rate: {rps: 0.001, burst: 2}\n    max_body_bytes: 64\n")
	big := strings.Repeat("x", 65)
	resp, _ := g.do(t, "POST", "/github/repos/acme/app/issues/1/comments", agentToken, big)
	if resp.StatusCode != 413 {
		t.Errorf("declared oversize body: status %d, want 413", resp.StatusCode)
	}
	// Chunked: no Content-Length, so only reading finds the excess.
	req, _ := http.NewRequest("POST", g.gateway.URL+"/github/repos/acme/app/issues/1/comments", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversize body: status %d, want 413", resp.StatusCode)
	}
	resp, _ = g.do(t, "GET", "/github/repos/acme/app/issues", agentToken, "")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third call over burst 2: status %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestUntrustedUpstreamFailsClosed(t *testing.T) {
	g := newRig(t, "")
	other := httptest.NewTLSServer(g.api) // a different self-signed CA
	defer other.Close()
	y := fmt.Sprintf(`version: 1
networks: {allow: [127.0.0.0/8]}
apis:
  github:
    upstream: %s
    client_token_env: AGENT
    secret: {header: Authorization, prefix: "Bearer ", env: GH}
    allow: [{methods: [GET], paths: ["/**"]}]
`, other.URL)
	pol, err := policy.LoadBytes([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENT": agentToken, "GH": ghSecret}
	srv := httptest.NewServer(New(Config{Policy: func() *policy.Policy { return pol }, Env: func(k string) string { return env[k] }, Logger: quiet}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/github/x", nil)
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("upstream with an unknown CA: status %d, want 502", resp.StatusCode)
	}
}

func TestOneDecisionEntryPerRequest(t *testing.T) {
	g := newRig(t, "")
	g.do(t, "GET", "/github/repos/acme/app/issues", agentToken, "")
	g.do(t, "POST", "/github/repos/acme/app/issues", agentToken, "")
	es := g.rec.All()
	if len(es) != 2 {
		t.Fatalf("got %d entries, want 2: %+v", len(es), es)
	}
	want := []struct {
		method, path, reason, rule string
	}{
		{"GET", "/repos/acme/app/issues", "allowlisted", "apis.github.allow[0]"},
		{"POST", "/repos/acme/app/issues", "path_not_allowed", ""},
	}
	for i, w := range want {
		e := es[i]
		if e.Host != "github" || e.Proto != vocab.ProtoGateway || e.Method != w.method || e.Path != w.path ||
			e.Reason.String() != w.reason || e.Rule != w.rule {
			t.Errorf("entry %d = %+v, want github %s %s %s rule %q", i, e, w.method, w.path, w.reason, w.rule)
		}
	}
	if !strings.Contains(es[1].Hint, `{methods: [POST], paths: ["/repos/acme/app/issues"]}`) {
		t.Errorf("denial hint = %q, want the rule that would allow it", es[1].Hint)
	}
}

var quiet = slog.New(slog.DiscardHandler)
