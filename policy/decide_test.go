package policy

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// mustLoad compiles a policy from YAML or fails the test.
func mustLoad(t testing.TB, y string) *Policy {
	t.Helper()
	p, err := LoadBytes([]byte(y), "test.yaml")
	if err != nil {
		t.Fatalf("LoadBytes: %v", err)
	}
	return p
}

const matchPolicy = `
version: 1
allow:
  - host: api.example.com          # 0
  - host: "*.example.com"          # 1
    ports: [443, 8443]
  - host: Exact.Example.NET.       # 2: normalised to exact.example.net
    ports: [80]
  - host: bücher.example           # 3: xn--bcher-kva.example
  - host: "*.deep.example.org"     # 4
  - host: "*.example.org"          # 5
    ports: [22]
  - cidr: 203.0.113.0/24           # 6 (documentation range: CheckAddr denies)
  - cidr: 149.154.160.0/20         # 7
    ports: [443, 80]
  - cidr: 149.154.167.0/24         # 8
    ports: [8443]
  - cidr: 2001:67c:4e8::/48        # 9
  - host: internal.corp            # 10
networks:
  allow: [10.20.0.0/16]
providers:
  openrouter:
    upstream: https://OpenRouter.ai/api
    format: openai
    api_key_env: OPENROUTER_API_KEY
    client_token_env: AGENT_TOKEN
  local:
    upstream: http://127.0.0.1:9999
    format: anthropic
    api_key_env: K
    client_token_env: T
budget:
  cap_usd: 1
`

func TestDecideMatching(t *testing.T) {
	p := mustLoad(t, matchPolicy)
	tests := []struct {
		host   string
		port   uint16
		proto  vocab.Proto
		want   vocab.Verdict
		reason vocab.Reason
		rule   int // allow index of Decision.Rule; -1 = nil; -2 = provider rule
	}{
		// Exact names: case, trailing dot, IDN.
		{"api.example.com", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 0},
		{"API.Example.COM", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 0},
		{"api.example.com.", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 0},
		{"exact.example.net", 80, vocab.ProtoHTTP, vocab.Allow, vocab.ReasonAllowlisted, 2},
		{"exact.example.net", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed, 2},
		{"bücher.example", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 3},
		{"BÜCHER.example.", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 3},
		{"xn--bcher-kva.example", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 3},
		{"bucher.example", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		// Wildcards: any depth below the suffix, never the apex or look-alikes.
		{"a.example.com", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 1},
		{"a.b.example.com", 8443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 1},
		{"example.com", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"evilexample.com", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"example.com.evil.net", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"a.example.com.evil.net", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"a.example.co", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{".example.com", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		// The exact rule does not grant 8443 but the wildcard does (union).
		{"api.example.com", 8443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 1},
		{"api.example.com", 80, vocab.ProtoHTTP, vocab.Deny, vocab.ReasonPortNotAllowed, 0},
		// Most specific wildcard first; the shorter one still grants its port.
		{"x.deep.example.org", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 4},
		{"x.deep.example.org", 22, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 5},
		{"x.deep.example.org", 25, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed, 4},
		{"deep.example.org", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed, 5},
		// DNS ignores ports.
		{"exact.example.net", 0, vocab.ProtoDNS, vocab.Allow, vocab.ReasonAllowlisted, 2},
		{"a.example.org", 53, vocab.ProtoDNS, vocab.Allow, vocab.ReasonAllowlisted, 5},
		{"example.com", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"127.0.0.1", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		{"1.2.3.999", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		// IP literals: cidr rules, longest prefix first, address check first.
		{"149.154.167.220", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 7},
		{"149.154.167.220", 8443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 8},
		{"149.154.160.1", 8443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed, 7},
		{"149.154.167.1", 22, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed, 8},
		{"149.154.176.1", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonIPLiteralNotAllowed, -1},
		{"0225.0232.0247.0334", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 7}, // octal 149.154.167.220
		{"[2001:67c:4e8::1]", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 9},
		{"[::ffff:149.154.167.220]", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted, 7},
		{"203.0.113.7", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPrivateAddress, -1},
		{"169.254.169.254", 80, vocab.ProtoHTTP, vocab.Deny, vocab.ReasonMetadataAddress, -1},
		{"10.20.1.1", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonIPLiteralNotAllowed, -1}, // networks.allow is not a grant
		{"10.21.1.1", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPrivateAddress, -1},
		{"2130706433", 80, vocab.ProtoHTTP, vocab.Deny, vocab.ReasonPrivateAddress, -1},
		{"8.8.8.8", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonIPLiteralNotAllowed, -1},
		// Provider hosts belong to the gateway.
		{"openrouter.ai", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonUseGateway, -2},
		{"OPENROUTER.AI.", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonUseGateway, -2},
		{"openrouter.ai", 443, vocab.ProtoGateway, vocab.Allow, vocab.ReasonAllowlisted, -2},
		{"127.0.0.1", 9999, vocab.ProtoGateway, vocab.Allow, vocab.ReasonAllowlisted, -2},
		{"api.example.com", 443, vocab.ProtoGateway, vocab.Deny, vocab.ReasonNotAllowlisted, -1},
		// Malformed.
		{"", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		{"api.example.com:443", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		{"api%2eexample.com", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		{"api.example.com", 0, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		{"1.2.3.999", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonBadRequest, -1},
		{"api.example.com", 443, vocab.Proto(9), vocab.Deny, vocab.ReasonBadRequest, -1},
	}
	for _, tt := range tests {
		req := Request{Client: netip.MustParseAddr("172.30.0.5"), Host: tt.host, Port: tt.port, Proto: tt.proto}
		got := p.Decide(req)
		if got.Verdict != tt.want || got.Reason != tt.reason {
			t.Errorf("Decide(%q:%d %s) = %s %s, want %s %s", tt.host, tt.port, tt.proto, got.Verdict, got.Reason, tt.want, tt.reason)
			continue
		}
		switch {
		case tt.rule == -1 && got.Rule != nil:
			t.Errorf("Decide(%q:%d %s).Rule = %s, want nil", tt.host, tt.port, tt.proto, got.Rule)
		case tt.rule == -2 && (got.Rule == nil || got.Rule.Provider == ""):
			t.Errorf("Decide(%q:%d %s).Rule = %v, want a provider rule", tt.host, tt.port, tt.proto, got.Rule)
		case tt.rule >= 0 && (got.Rule == nil || got.Rule.Index != tt.rule):
			t.Errorf("Decide(%q:%d %s).Rule = %v, want allow[%d]", tt.host, tt.port, tt.proto, got.Rule, tt.rule)
		}
	}
}

func TestDecideReportMode(t *testing.T) {
	p := mustLoad(t, matchPolicy+"mode: report\n")
	tests := []struct {
		host   string
		port   uint16
		want   vocab.Verdict
		reason vocab.Reason
	}{
		{"api.example.com", 443, vocab.Allow, vocab.ReasonAllowlisted},
		{"evil.example", 443, vocab.Report, vocab.ReasonNotAllowlisted},
		{"exact.example.net", 443, vocab.Report, vocab.ReasonPortNotAllowed},
		{"8.8.8.8", 443, vocab.Report, vocab.ReasonIPLiteralNotAllowed},
		{"openrouter.ai", 443, vocab.Report, vocab.ReasonUseGateway},
		// Never relaxed: addresses and malformed requests.
		{"169.254.169.254", 80, vocab.Deny, vocab.ReasonMetadataAddress},
		{"10.0.0.1", 443, vocab.Deny, vocab.ReasonPrivateAddress},
		{"127.1", 443, vocab.Deny, vocab.ReasonPrivateAddress},
		{"bad host", 443, vocab.Deny, vocab.ReasonBadRequest},
	}
	for _, tt := range tests {
		got := p.Decide(Request{Host: tt.host, Port: tt.port, Proto: vocab.ProtoConnect})
		if got.Verdict != tt.want || got.Reason != tt.reason {
			t.Errorf("report mode Decide(%q:%d) = %s %s, want %s %s", tt.host, tt.port, got.Verdict, got.Reason, tt.want, tt.reason)
		}
		if got.Verdict.Allowed() != (tt.want != vocab.Deny) {
			t.Errorf("report mode Decide(%q:%d).Verdict.Allowed() = %v", tt.host, tt.port, got.Verdict.Allowed())
		}
	}
	if got := p.CheckAddr(netip.MustParseAddr("10.0.0.1")); got.Verdict != vocab.Deny {
		t.Errorf("report mode CheckAddr(10.0.0.1) = %s, want deny", got.Verdict)
	}
}

func TestZeroPolicyDeniesEverything(t *testing.T) {
	var p Policy
	for _, host := range []string{"example.com", "8.8.8.8", "[2001:4860::8888]"} {
		if got := p.Decide(Request{Host: host, Port: 443, Proto: vocab.ProtoConnect}); got.Verdict != vocab.Deny {
			t.Errorf("zero Policy Decide(%q) = %s, want deny", host, got.Verdict)
		}
	}
	if got := p.QTypeAllowed(1); got {
		t.Errorf("zero Policy QTypeAllowed(A) = true, want false")
	}
}

func TestDefaultDeniesAll(t *testing.T) {
	p := Default()
	for _, host := range []string{"example.com", "api.telegram.org", "localhost"} {
		if got := p.Decide(Request{Host: host, Port: 443, Proto: vocab.ProtoConnect}); got.Verdict != vocab.Deny || got.Reason != vocab.ReasonNotAllowlisted {
			t.Errorf("Default().Decide(%q) = %s %s, want deny not_allowlisted", host, got.Verdict, got.Reason)
		}
	}
}

func TestQTypeAllowed(t *testing.T) {
	p := mustLoad(t, "version: 1\ndns: {qtypes: [a, AAAA, Https, TYPE99, caa]}\n")
	for _, tt := range []struct {
		qtype uint16
		want  bool
	}{{1, true}, {28, true}, {65, true}, {99, true}, {257, true}, {5, false}, {16, false}, {255, false}, {65535, false}, {0, false}} {
		if got := p.QTypeAllowed(tt.qtype); got != tt.want {
			t.Errorf("QTypeAllowed(%d) = %v, want %v", tt.qtype, got, tt.want)
		}
	}
	d := Default()
	for _, tt := range []struct {
		qtype uint16
		want  bool
	}{{1, true}, {28, true}, {5, true}, {65, true}, {16, false}, {64, false}} {
		if got := d.QTypeAllowed(tt.qtype); got != tt.want {
			t.Errorf("Default().QTypeAllowed(%d) = %v, want %v", tt.qtype, got, tt.want)
		}
	}
}

func TestDecideAllocs(t *testing.T) {
	p := mustLoad(t, matchPolicy)
	reqs := []Request{
		{Host: "api.example.com", Port: 443, Proto: vocab.ProtoConnect},       // exact allow
		{Host: "a.b.example.com", Port: 443, Proto: vocab.ProtoConnect},       // wildcard allow
		{Host: "evil.example", Port: 443, Proto: vocab.ProtoConnect},          // deny
		{Host: "api.example.com.", Port: 443, Proto: vocab.ProtoConnect},      // trailing dot
		{Host: "exact.example.net", Port: 443, Proto: vocab.ProtoHTTP},        // port denial
		{Host: "149.154.167.220", Port: 443, Proto: vocab.ProtoConnect},       // cidr
		{Host: "0x7f.1", Port: 443, Proto: vocab.ProtoConnect},                // private literal
		{Host: "[2001:67c:4e8::1]", Port: 443, Proto: vocab.ProtoConnect},     // v6 literal
		{Host: "x.deep.example.org", Port: 0, Proto: vocab.ProtoDNS},          // dns
		{Host: "openrouter.ai", Port: 443, Proto: vocab.ProtoConnect},         // use_gateway
		{Host: "bad..host", Port: 443, Proto: vocab.ProtoConnect},             // bad request
		{Host: "xn--bcher-kva.example", Port: 443, Proto: vocab.ProtoConnect}, // punycode: validated, may allocate
	}
	for _, req := range reqs[:len(reqs)-1] {
		if n := testing.AllocsPerRun(100, func() { _ = p.Decide(req) }); n != 0 {
			t.Errorf("Decide(%q) allocates %v times per run, want 0", req.Host, n)
		}
	}
	for _, a := range []string{"8.8.8.8", "10.0.0.1", "2001:4860::8888", "::ffff:169.254.169.254", "2002:a9fe:a9fe::1", "10.20.3.4"} {
		addr := netip.MustParseAddr(a)
		if n := testing.AllocsPerRun(100, func() { _ = p.CheckAddr(addr) }); n != 0 {
			t.Errorf("CheckAddr(%s) allocates %v times per run, want 0", a, n)
		}
	}
}
