package policy

import (
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

func TestRuleString(t *testing.T) {
	p := mustLoad(t, `version: 1
allow:
  - host: API.GitHub.com
  - host: "*.github.com"
    ports: [443, 22]
  - cidr: 149.154.160.0/20
  - host: pypi.org
    rate: {rps: 5, burst: 20}
providers:
  openrouter: {upstream: "https://openrouter.ai/api", format: openai, api_key_env: K, client_token_env: T}
budget: {cap_usd: 1}
`)
	want := []string{
		`allow[0] host: "api.github.com" ports: [443]`,
		`allow[1] host: "*.github.com" ports: [443, 22]`,
		`allow[2] cidr: 149.154.160.0/20 ports: [443]`,
		`allow[3] host: "pypi.org" ports: [443] rate: {rps: 5, burst: 20}`,
	}
	for i, w := range want {
		if got := p.Rules()[i].String(); got != w {
			t.Errorf("Rules()[%d].String() = %s, want %s", i, got, w)
		}
	}
	d := p.Decide(Request{Host: "openrouter.ai", Port: 443, Proto: vocab.ProtoConnect})
	if got, want := d.Rule.String(), `providers.openrouter host: "openrouter.ai"`; got != want {
		t.Errorf("provider rule String() = %s, want %s", got, want)
	}
	var nilRule *Rule
	if got := nilRule.String(); got != "" {
		t.Errorf("nil Rule String() = %q, want empty", got)
	}
}

func TestHint(t *testing.T) {
	p := mustLoad(t, `version: 1
allow:
  - host: a.example
  - host: b.example
  - host: c.example
  - host: "*.github.com"
providers:
  openrouter: {upstream: "https://openrouter.ai/api", format: openai, api_key_env: K, client_token_env: T}
budget: {cap_usd: 1}
`)
	tests := []struct {
		host  string
		port  uint16
		proto vocab.Proto
		want  string
	}{
		{"evil.example", 443, vocab.ProtoConnect, `add "- host: evil.example" under allow:`},
		{"Evil.Example.", 443, vocab.ProtoConnect, `add "- host: evil.example" under allow:`},
		{"bücher.example", 443, vocab.ProtoConnect, `add "- host: xn--bcher-kva.example" under allow:`},
		{"evil.example", 8080, vocab.ProtoHTTP, `add "- {host: evil.example, ports: [8080]}" under allow:`},
		{"evil.example", 0, vocab.ProtoDNS, `add "- host: evil.example" under allow:`},
		{"x.github.com", 8443, vocab.ProtoConnect, `add 8443 to ports: of allow[3]`},
		{"203.0.113.7", 443, vocab.ProtoConnect, `203.0.113.7 is a documentation address; allow: cannot grant it, only "- 203.0.113.7/32" under networks.allow: can`},
		{"8.8.8.8", 443, vocab.ProtoConnect, `add "- cidr: 8.8.8.8/32" under allow:`},
		{"0x8080808", 853, vocab.ProtoConnect, `add "- {cidr: 8.8.8.8/32, ports: [853]}" under allow:`},
		{"[2606:4700::1111]", 443, vocab.ProtoConnect, `add "- cidr: 2606:4700::1111/128" under allow:`},
		{"10.1.2.3", 443, vocab.ProtoConnect, `10.1.2.3 is a private address; allow: cannot grant it, only "- 10.1.2.3/32" under networks.allow: can`},
		{"169.254.169.254", 80, vocab.ProtoHTTP, "cloud metadata addresses can never be granted"},
		{"openrouter.ai", 443, vocab.ProtoConnect, "send provider calls to the egressd gateway at /openrouter/ instead"},
		{"a.example", 443, vocab.ProtoConnect, ""},    // allowed: nothing to add
		{"bad..host", 443, vocab.ProtoConnect, ""},    // malformed: no grant helps
		{"evil.example", 443, vocab.ProtoGateway, ""}, // gateway: only providers:
	}
	for _, tt := range tests {
		req := Request{Host: tt.host, Port: tt.port, Proto: tt.proto}
		if got := Hint(req, p.Decide(req)); got != tt.want {
			t.Errorf("Hint(%q:%d) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
	// Report mode: the hint still says what enforce would need.
	r := mustLoad(t, "version: 1\nmode: report\n")
	req := Request{Host: "evil.example", Port: 443, Proto: vocab.ProtoConnect}
	if got, want := Hint(req, r.Decide(req)), `add "- host: evil.example" under allow:`; got != want {
		t.Errorf("report-mode Hint = %q, want %q", got, want)
	}
	// A name that resolved to a private address (CheckAddr's decision).
	req = Request{Host: "internal.example", Port: 443, Proto: vocab.ProtoConnect}
	d := Decision{Verdict: vocab.Deny, Reason: vocab.ReasonPrivateAddress}
	if got := Hint(req, d); got == "" {
		t.Errorf("Hint for a name resolving privately is empty, want an explanation")
	}
}
