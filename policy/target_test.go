package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Request
	}{
		{"example.com", Request{Host: "example.com", Port: 443, Proto: vocab.ProtoConnect}},
		{"example.com:8443", Request{Host: "example.com", Port: 8443, Proto: vocab.ProtoConnect}},
		{"http://example.com/path?q=1", Request{Host: "example.com", Port: 80, Proto: vocab.ProtoHTTP}},
		{"http://example.com:8080/", Request{Host: "example.com", Port: 8080, Proto: vocab.ProtoHTTP}},
		{"https://Example.COM/", Request{Host: "Example.COM", Port: 443, Proto: vocab.ProtoConnect}},
		{"[::1]:22", Request{Host: "::1", Port: 22, Proto: vocab.ProtoConnect}},
		{"[::1]", Request{Host: "::1", Port: 443, Proto: vocab.ProtoConnect}},
		{"2001:db8::1", Request{Host: "2001:db8::1", Port: 443, Proto: vocab.ProtoConnect}},
		{"2130706433:80", Request{Host: "2130706433", Port: 80, Proto: vocab.ProtoConnect}},
	}
	for _, tc := range tests {
		got, err := ParseTarget(tc.in)
		if err != nil {
			t.Errorf("ParseTarget(%q) error %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	for _, in := range []string{"", "ftp://example.com/", "example.com:0", "example.com:70000", "example.com:x", "http://user@example.com/", ":443", "a:b:c:"} {
		if _, err := ParseTarget(in); !errors.Is(err, ErrBadTarget) {
			t.Errorf("ParseTarget(%q) error = %v, want ErrBadTarget", in, err)
		}
	}
}

func TestSummary(t *testing.T) {
	p, err := LoadBytes([]byte("version: 1\nallow:\n  - host: a.example\n  - host: \"*.b.example\"\n  - cidr: 203.0.113.0/24\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	got := p.Summary()
	want := "version 1, mode enforce, 3 allow rules (1 hosts, 1 wildcards, 1 cidrs)"
	if got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	if got := Default().Summary(); !strings.HasSuffix(got, "everything is denied") {
		t.Errorf("default Summary = %q, want it to say everything is denied", got)
	}
}

func TestRuleStringDoesNotAllocate(t *testing.T) {
	p, err := LoadBytes([]byte("version: 1\nallow:\n  - host: \"*.github.com\"\n    ports: [443, 80]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	r := &p.Rules()[0]
	if got, want := r.String(), `allow[0] host: "*.github.com" ports: [443, 80]`; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.String() }); n != 0 {
		t.Errorf("Rule.String allocates %v times per call, want 0 (logged on every request)", n)
	}
}

func TestSummaryBudget(t *testing.T) {
	const prov = "providers:\n  p: {upstream: \"https://p.test\", format: openai, api_key_env: K, client_token_env: T}\n"
	tests := []struct {
		budget string
		want   string
	}{
		{"budget: {cap_usd: 25, period: month}\n", ", 1 providers, cap $25.00 per month — everything is denied"},
		{"budget: {cap_usd: 0.001, period: day}\n", ", 1 providers, cap $0.001 per day — everything is denied"},
		{"budget: {cap_usd: 100, period: total}\n", ", 1 providers, cap $100.00 in total, never reset — everything is denied"},
	}
	for _, tt := range tests {
		p, err := LoadBytes([]byte("version: 1\n"+prov+tt.budget), "t")
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Summary(); !strings.HasSuffix(got, tt.want) {
			t.Errorf("Summary with %q = %q, want it to end %q", tt.budget, got, tt.want)
		}
	}
}
