package policy

import (
	"os"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

const apisPolicy = `version: 1
allow:
  - host: api.github.com
apis:
  github:
    upstream: https://api.github.com
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {header: Authorization, prefix: "Bearer ", env: GITHUB_TOKEN}
    allow:
      - {methods: [GET], paths: ["/repos/acme/app/issues", "/repos/acme/app/issues/*"]}
      - {methods: [POST], paths: ["/repos/acme/app/issues/*/comments"]}
  git:
    upstream: https://git.example.com/base/
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {basic: {user: x-access-token, password_env: GIT_TOKEN}}
    rate: {rps: 1, burst: 2}
    max_body_bytes: 1000
    allow:
      - {methods: [GET], paths: ["/acme/app.git/info/refs?service=git-upload-pack"]}
      - {methods: [POST], paths: ["/acme/app.git/git-upload-pack", "/docs/**"]}
`

func TestDecideAPI(t *testing.T) {
	p := mustLoad(t, apisPolicy)
	tests := []struct {
		route, method, path, query string
		reason                     vocab.Reason
		rule                       int
		canon, fwdQuery            string
	}{
		{"github", "GET", "/repos/acme/app/issues", "state=open", vocab.ReasonAllowlisted, 0, "/repos/acme/app/issues", "state=open"},
		{"GitHub", "GET", "/repos/acme/app/issues/7", "", vocab.ReasonAllowlisted, 0, "/repos/acme/app/issues/7", ""},
		{"github", "GET", "//repos/acme/app/issues/7/", "", vocab.ReasonAllowlisted, 0, "/repos/acme/app/issues/7", ""},
		{"github", "POST", "/repos/acme/app/issues/7/comments", "", vocab.ReasonAllowlisted, 1, "/repos/acme/app/issues/7/comments", ""},
		{"github", "POST", "/repos/acme/app/issues", "", vocab.ReasonPathNotAllowed, -1, "/repos/acme/app/issues", ""},
		{"github", "GET", "/repos/acme/other/issues", "", vocab.ReasonPathNotAllowed, -1, "/repos/acme/other/issues", ""},
		{"github", "get", "/repos/acme/app/issues", "", vocab.ReasonPathNotAllowed, -1, "/repos/acme/app/issues", ""},
		{"github", "DELETE", "/repos/acme/app/issues/7", "", vocab.ReasonPathNotAllowed, -1, "/repos/acme/app/issues/7", ""},
		{"github", "GET", "/repos/acme/app/issues/../../other", "", vocab.ReasonBadRequest, -1, "", ""},
		{"github", "GET", "/repos/acme/app/issues%2f7", "", vocab.ReasonBadRequest, -1, "", ""},
		{"github", "GET", "/repos/acme/app/%69ssues", "", vocab.ReasonAllowlisted, 0, "/repos/acme/app/issues", ""},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-upload-pack", vocab.ReasonAllowlisted, 0, "/acme/app.git/info/refs", "service=git-upload-pack"},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-receive-pack", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/info/refs", ""},
		{"git", "GET", "/acme/app.git/info/refs", "", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/info/refs", ""},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-upload-pack&x=1", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/info/refs", ""},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-upload-pack&service=git-upload-pack", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/info/refs", ""},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-upload-pack;x", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/info/refs", ""},
		{"git", "POST", "/acme/app.git/git-upload-pack", "", vocab.ReasonAllowlisted, 1, "/acme/app.git/git-upload-pack", ""},
		{"git", "POST", "/acme/app.git/git-receive-pack", "", vocab.ReasonPathNotAllowed, -1, "/acme/app.git/git-receive-pack", ""},
		{"git", "POST", "/docs", "", vocab.ReasonAllowlisted, 1, "/docs", ""},
		{"git", "POST", "/docs/a/b/c", "", vocab.ReasonAllowlisted, 1, "/docs/a/b/c", ""},
		{"nope", "GET", "/", "", vocab.ReasonNotAllowlisted, -1, "", ""},
	}
	for _, tt := range tests {
		d := p.DecideAPI(tt.route, tt.method, tt.path, tt.query)
		if d.Reason != tt.reason || d.Rule != tt.rule || d.Path != tt.canon || d.Query != tt.fwdQuery {
			t.Errorf("DecideAPI(%s %s %s?%s) = %s rule %d path %q query %q, want %s rule %d path %q query %q",
				tt.route, tt.method, tt.path, tt.query, d.Reason, d.Rule, d.Path, d.Query, tt.reason, tt.rule, tt.canon, tt.fwdQuery)
		}
		if got, want := d.Verdict == vocab.Allow, tt.reason == vocab.ReasonAllowlisted; got != want {
			t.Errorf("DecideAPI(%s %s %s) verdict %s, want allowed=%v", tt.route, tt.method, tt.path, d.Verdict, want)
		}
	}
}

func TestAPIDefaultsAndRoute(t *testing.T) {
	p := mustLoad(t, apisPolicy)
	gh, git := p.API("github"), p.API("git")
	if gh == nil || git == nil {
		t.Fatalf("API(github) = %v, API(git) = %v, want both", gh, git)
	}
	if gh.Rate != DefaultAPIRate || gh.MaxBodyBytes != DefaultAPIMaxBodyBytes {
		t.Errorf("github defaults = %+v, %d; want %+v, %d", gh.Rate, gh.MaxBodyBytes, DefaultAPIRate, DefaultAPIMaxBodyBytes)
	}
	if git.Rate != (RateConfig{RPS: 1, Burst: 2}) || git.MaxBodyBytes != 1000 {
		t.Errorf("git limits = %+v, %d; want {1 2}, 1000", git.Rate, git.MaxBodyBytes)
	}
	if got, want := git.Upstream.String(), "https://git.example.com/base"; got != want {
		t.Errorf("git upstream = %s, want %s", got, want)
	}
	if !strings.Contains(p.Summary(), "2 api routes") {
		t.Errorf("Summary() = %q, want it to count 2 api routes", p.Summary())
	}
}

// TestAPIHostsUseGateway: a routed upstream's host is reserved like a
// provider's, even when allow: grants it, on every edge.
func TestAPIHostsUseGateway(t *testing.T) {
	p := mustLoad(t, apisPolicy)
	for _, req := range []Request{
		{Host: "api.github.com", Port: 443, Proto: vocab.ProtoConnect},
		{Host: "API.GitHub.com.", Port: 80, Proto: vocab.ProtoHTTP},
		{Host: "api.github.com", Proto: vocab.ProtoDNS},
		{Host: "git.example.com", Port: 443, Proto: vocab.ProtoConnect},
	} {
		d := p.Decide(req)
		if d.Verdict != vocab.Deny || d.Reason != vocab.ReasonUseGateway {
			t.Errorf("Decide(%+v) = %s %s, want deny use_gateway", req, d.Verdict, d.Reason)
			continue
		}
		hint := Hint(req, d)
		if !strings.Contains(hint, "http://<gateway>/g") || !strings.Contains(hint, "in place of https://") {
			t.Errorf("Hint(%+v) = %q, want the gateway base URL", req, hint)
		}
	}
	d := p.Decide(Request{Host: "api.github.com", Port: 443, Proto: vocab.ProtoConnect})
	if got, want := d.Rule.String(), `apis.github host: "api.github.com"`; got != want {
		t.Errorf("rule = %s, want %s", got, want)
	}
}

func TestAPIHint(t *testing.T) {
	p := mustLoad(t, apisPolicy)
	tests := []struct {
		route, method, path, query, want string
	}{
		{"github", "POST", "/repos/acme/app/issues", "x=1", `add "- {methods: [POST], paths: ["/repos/acme/app/issues"]}" under apis.github.allow:`},
		{"git", "GET", "/acme/app.git/info/refs", "service=git-receive-pack", `add "- {methods: [GET], paths: ["/acme/app.git/info/refs?service=git-receive-pack"]}" under apis.git.allow:`},
		{"github", "GET", "/repos/acme/app/issues", "", ""},
		{"github", "DELETE", "/**", "", ""},
		{"github", "DELETE", "/repos/*/x", "", ""},
	}
	for _, tt := range tests {
		d := p.DecideAPI(tt.route, tt.method, tt.path, tt.query)
		if got := APIHint(d, tt.method, tt.query); got != tt.want {
			t.Errorf("APIHint(%s %s %s) = %s, want %s", tt.route, tt.method, tt.path, got, tt.want)
		}
	}
}

func TestValidateAPIs(t *testing.T) {
	route := func(body string) string {
		return "apis:\n  r:\n    upstream: https://api.example.com\n    client_token_env: AGENT\n" +
			"    secret: {header: Authorization, env: SECRET}\n    allow: [{methods: [GET], paths: [\"/x\"]}]\n" + body
	}
	tests := []struct{ name, yaml, path, msg string }{
		{"http upstream", strings.Replace(route(""), "https://api.example.com", "http://127.0.0.1:9", 1), "apis.r.upstream", "must be https"},
		{"upstream query", strings.Replace(route(""), "api.example.com", "api.example.com/?a=b", 1), "apis.r.upstream", "query"},
		{"upstream dot path", strings.Replace(route(""), "api.example.com", "api.example.com/a/../b", 1), "apis.r.upstream", ". or .. segment"},
		{"no client token", strings.Replace(route(""), "AGENT", "", 1), "apis.r.client_token_env", "required"},
		{"same env", strings.Replace(route(""), "SECRET", "AGENT", 1), "apis.r.secret.env", "must differ"},
		{"no secret", strings.Replace(route(""), "secret: {header: Authorization, env: SECRET}", "ca_file: /ca.pem", 1), "apis.r.secret", "required"},
		{"both secrets", strings.Replace(route(""), "env: SECRET}", "env: SECRET, basic: {user: u, password_env: P}}", 1), "apis.r.secret", "both"},
		{"basic no user", strings.Replace(route(""), "{header: Authorization, env: SECRET}", "{basic: {password_env: P}}", 1), "apis.r.secret.basic.user", "required"},
		{"bad header", strings.Replace(route(""), "Authorization", "\"Auth orization\"", 1), "apis.r.secret.header", "header name"},
		{"relative ca", route("    ca_file: ca.pem\n"), "apis.r.ca_file", "absolute"},
		{"lower method", strings.Replace(route(""), "[GET]", "[get]", 1), "apis.r.allow[0].methods[0]", "write GET"},
		{"no methods", strings.Replace(route(""), "[GET]", "[]", 1), "apis.r.allow[0].methods", "empty"},
		{"bad glob", strings.Replace(route(""), `"/x"`, `"/x*"`, 1), "apis.r.allow[0].paths[0]", "whole segment"},
		{"uncanonical", strings.Replace(route(""), `"/x"`, `"/x/"`, 1), "apis.r.allow[0].paths[0]", "not canonical"},
		{"bad query", strings.Replace(route(""), `"/x"`, `"/x?a=%zz"`, 1), "apis.r.allow[0].paths[0]", "query"},
		{"empty allow", strings.Replace(route(""), `[{methods: [GET], paths: ["/x"]}]`, "[]", 1), "apis.r.allow", "empty"},
		{"rate", route("    rate: {rps: 1, burst: 0}\n"), "apis.r.rate.burst", "admits nothing"},
		{"body", route("    max_body_bytes: -1\n"), "apis.r.max_body_bytes", "negative"},
		{"unknown key", route("    secrets: {}\n"), "apis.r.secrets", "unknown key"},
		{"provider clash", route("") + withUpstream("https://a.example"), "apis.p", "same name"},
		{"bad name", strings.Replace(route(""), "  r:", "  \"r.s\":", 1), `apis["r.s"]`, "served as"},
		{"provider relative ca", strings.Replace(withUpstream("https://a.example"), "format: openai", "format: openai\n    ca_file: ca.pem", 1), "providers.p.ca_file", "absolute"},
	}
	for _, tt := range tests {
		y := tt.yaml
		if tt.name == "provider clash" {
			y = strings.Replace(y, "  r:", "  p:", 1)
			tt.path = "apis.p"
		}
		wantProblem(t, tt.name, y, tt.path, tt.msg)
	}
}

// FuzzDecideAPI: whatever the agent sends, an allowed call's path is
// canonical and matches a rule, and nothing panics.
func FuzzDecideAPI(f *testing.F) {
	p := mustLoad(f, apisPolicy)
	f.Add("github", "GET", "/repos/acme/app/issues/1", "a=b")
	f.Add("git", "GET", "/acme/app.git/info/refs", "service=git-upload-pack")
	f.Add("git", "POST", "/docs/%2e%2e/x", "")
	f.Fuzz(func(t *testing.T, route, method, path, query string) {
		d := p.DecideAPI(route, method, path, query)
		if d.Verdict != vocab.Allow {
			return
		}
		if d.Rule < 0 || d.Path == "" || strings.Contains(d.Path, "/../") || strings.Contains(d.Path, "//") {
			t.Fatalf("allowed %s %q → path %q rule %d", method, path, d.Path, d.Rule)
		}
		if again := p.DecideAPI(route, method, d.Path, d.Query); again.Verdict != vocab.Allow || again.Path != d.Path {
			t.Fatalf("forwarded form %q?%q is not allowed again: %s", d.Path, d.Query, again.Reason)
		}
	})
}

// FuzzPathPattern: the pattern compiler never panics, and a pattern it
// accepts without a query matches its own text when that has no wildcard.
func FuzzPathPattern(f *testing.F) {
	for _, s := range []string{"/a/*/b", "/a?b=c&d=e", "/**", "/a%2Fb", "/x?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pp, msg := compilePathPattern(s)
		if msg != "" || strings.Contains(s, "*") || strings.Contains(s, "?") {
			return
		}
		if !pp.glob.Match(s) {
			t.Fatalf("pattern %q does not match itself", s)
		}
	})
}

// TestExampleAPIsBlock: the commented apis: example in policy.example.yaml
// loads once uncommented, so the documentation cannot drift from the schema.
func TestExampleAPIsBlock(t *testing.T) {
	data, err := os.ReadFile("../policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		if line == "# apis:" {
			in = true
		}
		if in && !strings.HasPrefix(line, "#") {
			break
		}
		if in {
			b.WriteString(strings.TrimPrefix(line, "# ") + "\n")
		}
	}
	if b.Len() == 0 {
		t.Fatal("no commented apis: block in policy.example.yaml")
	}
	p, err := LoadBytes([]byte("version: 1\n"+b.String()), "example apis")
	if err != nil {
		t.Fatalf("the example apis: block does not load:\n%v\n%s", err, b.String())
	}
	if d := p.DecideAPI("git", "POST", "/acme/app.git/git-receive-pack", ""); d.Reason != vocab.ReasonPathNotAllowed {
		t.Errorf("example git route: push decided %s, want path_not_allowed", d.Reason)
	}
}
