package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

func TestAskConfigProblems(t *testing.T) {
	tests := []struct{ name, yaml, path, msg string }{
		{"private reason", "ask: {reasons: [private_address]}", "ask.reasons[0]", "only not_allowlisted"},
		{"rate limit reason", "ask: {reasons: [not_allowlisted, rate_limited]}", "ask.reasons[1]", "only not_allowlisted"},
		{"unknown reason", "ask: {reasons: [nope]}", "ask.reasons[0]", "only not_allowlisted"},
		{"hold too long", "ask: {hold: 1h}", "ask.hold", "up to"},
		{"open_for below hold", "ask: {hold: 30s, open_for: 10s}", "ask.open_for", "at least ask.hold"},
		{"remember negative", "ask: {remember_deny: -1s}", "ask.remember_deny", "negative"},
		{"telegram no token", "ask: {telegram: {operators: [1]}}", "ask.telegram.token_env", "required"},
		{"telegram no operators", "ask: {telegram: {token_env: T}}", "ask.telegram.operators", "empty"},
		{"telegram bad operator", "ask: {telegram: {token_env: T, operators: [-5]}}", "ask.telegram.operators[0]", "not a Telegram user ID"},
		{"telegram http api", "ask: {telegram: {token_env: T, operators: [1], api: \"http://api.example\"}}", "ask.telegram.api", "https"},
		{"webhook no secret", "ask: {webhook: {url: \"https://hooks.example/x\"}}", "ask.webhook.secret_env", "required"},
		{"webhook userinfo", "ask: {webhook: {url: \"https://u:p@hooks.example/x\", secret_env: S}}", "ask.webhook.url", "without userinfo"},
		{"unknown key", "ask: {hodl: 5s}", "ask.hodl", ""},
		{"telegram unknown key", "ask: {telegram: {token_env: T, operators: [1], tokne: x}}", "ask.telegram.tokne", ""},
	}
	for _, tt := range tests {
		wantProblem(t, tt.name, tt.yaml, tt.path, tt.msg)
	}
}

func TestAskDefaults(t *testing.T) {
	off, err := LoadBytes([]byte("version: 1\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if off.Config().Ask != nil || off.Askable(vocab.ReasonNotAllowlisted) {
		t.Errorf("no ask: got %+v askable %v, want nil and false", off.Config().Ask, off.Askable(vocab.ReasonNotAllowlisted))
	}
	p, err := LoadBytes([]byte("version: 1\nask: {telegram: {token_env: T, operators: [42]}}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := p.Config().Ask
	if a.Hold != 20*time.Second || a.OpenFor != time.Hour || a.RememberDeny != time.Hour || a.Telegram.API != "https://api.telegram.org" {
		t.Errorf("defaults: got %+v %+v", a, a.Telegram)
	}
	for r, want := range map[vocab.Reason]bool{vocab.ReasonNotAllowlisted: true, vocab.ReasonPortNotAllowed: true,
		vocab.ReasonPrivateAddress: false, vocab.ReasonRateLimited: false, vocab.ReasonSNIMismatch: false, vocab.ReasonBadRequest: false} {
		if got := p.Askable(r); got != want {
			t.Errorf("Askable(%v) = %v, want %v", r, got, want)
		}
	}
	only, err := LoadBytes([]byte("version: 1\nask: {reasons: [port_not_allowed]}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if only.Askable(vocab.ReasonNotAllowlisted) || !only.Askable(vocab.ReasonPortNotAllowed) {
		t.Errorf("reasons: [port_not_allowed]: askable not_allowlisted %v, port_not_allowed %v", only.Askable(vocab.ReasonNotAllowlisted), only.Askable(vocab.ReasonPortNotAllowed))
	}
}

func TestOverlayDecide(t *testing.T) {
	base, err := LoadBytes([]byte("version: 1\nask: {}\nallow: [{host: granted.example, ports: [443]}]\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	until := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	p := base.WithOverlay(NewOverlay([]Grant{
		{Host: "New.Example.", Port: 443, Until: until, By: "cli", Kind: "for"},
		{Host: "granted.example", Port: 8443, Until: until, By: "cli", Kind: "once"},
		{Host: "bad.example", Port: 443, Until: until, By: "cli", Deny: true},
		{Host: "10.0.0.1", Port: 443, Until: until, By: "cli"}, // never reaches an address check
		{Host: "lapsed.example", Port: 443, Until: until, By: "cli", Kind: "once", KeepOpen: true},
	}))
	c := netip.MustParseAddr("172.20.0.5")
	tests := []struct {
		host   string
		port   uint16
		proto  vocab.Proto
		want   vocab.Verdict
		reason vocab.Reason
	}{
		{"new.example", 443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted},
		{"NEW.example", 443, vocab.ProtoHTTP, vocab.Allow, vocab.ReasonAllowlisted},
		{"new.example", 80, vocab.ProtoHTTP, vocab.Deny, vocab.ReasonNotAllowlisted},
		{"new.example", 0, vocab.ProtoDNS, vocab.Allow, vocab.ReasonAllowlisted},
		{"granted.example", 8443, vocab.ProtoConnect, vocab.Allow, vocab.ReasonAllowlisted},
		{"granted.example", 22, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPortNotAllowed},
		{"bad.example", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonOperatorDenied},
		{"bad.example", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonOperatorDenied},
		{"other.example", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted},
		{"10.0.0.1", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonPrivateAddress},
		{"new.example", 443, vocab.ProtoGateway, vocab.Deny, vocab.ReasonNotAllowlisted},
		{"lapsed.example", 443, vocab.ProtoConnect, vocab.Deny, vocab.ReasonNotAllowlisted},
		{"lapsed.example", 0, vocab.ProtoDNS, vocab.Deny, vocab.ReasonNotAllowlisted},
	}
	for _, tt := range tests {
		d := p.Decide(Request{Client: c, Host: tt.host, Port: tt.port, Proto: tt.proto})
		if d.Verdict != tt.want || d.Reason != tt.reason {
			t.Errorf("Decide(%s:%d %v) = %v %v, want %v %v", tt.host, tt.port, tt.proto, d.Verdict, d.Reason, tt.want, tt.reason)
		}
	}
	d := p.Decide(Request{Client: c, Host: "new.example", Port: 443, Proto: vocab.ProtoConnect})
	if got, want := d.Rule.String(), "ask grant new.example:443 (for, by cli) until 2030-01-02T03:04:05Z"; got != want {
		t.Errorf("grant rule: got %q, want %q", got, want)
	}
	// A lapsed "allow once" keeps what it let through open, and only that.
	for _, tt := range []struct {
		host string
		port uint16
		want vocab.Verdict
	}{{"lapsed.example", 443, vocab.Allow}, {"lapsed.example", 8443, vocab.Deny}, {"other.example", 443, vocab.Deny}, {"new.example", 443, vocab.Allow}} {
		if d := p.DecideOpen(Request{Client: c, Host: tt.host, Port: tt.port, Proto: vocab.ProtoConnect}); d.Verdict != tt.want {
			t.Errorf("DecideOpen(%s:%d) = %v %v, want %v", tt.host, tt.port, d.Verdict, d.Reason, tt.want)
		}
	}
	// The base policy is untouched, and without ask: an overlay is ignored.
	if d := base.Decide(Request{Client: c, Host: "new.example", Port: 443, Proto: vocab.ProtoConnect}); d.Verdict != vocab.Deny {
		t.Errorf("base policy allows a grant of its overlay copy")
	}
	noAsk, _ := LoadBytes([]byte("version: 1\n"), "p.yaml")
	if d := noAsk.WithOverlay(NewOverlay([]Grant{{Host: "x.example", Port: 443}})).Decide(Request{Host: "x.example", Port: 443, Proto: vocab.ProtoConnect}); d.Verdict != vocab.Deny {
		t.Errorf("overlay without ask: allowed")
	}
}
