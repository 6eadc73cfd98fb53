package benchmarks

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// decideRules is the size of the allow-list the decision benchmarks use:
// the target is under 200 ns and 0 allocations at 10,000 rules.
const decideRules = 10000

// bigPolicyYAML builds an allow-list of decideRules entries: 45% exact
// names, 45% wildcards, 10% cidrs, spread over several label depths so the
// suffix walk has work to do.
func bigPolicyYAML() string {
	var b strings.Builder
	b.WriteString("version: 1\nallow:\n")
	for i := 0; i < decideRules; i++ {
		switch i % 10 {
		case 0, 2, 4, 6:
			fmt.Fprintf(&b, "  - host: api-%d.service-%d.example.com\n", i, i%97)
		case 1, 3, 5, 7:
			fmt.Fprintf(&b, "  - host: \"*.tenant-%d.cdn-%d.example.net\"\n    ports: [443, 8443]\n", i, i%89)
		case 8:
			fmt.Fprintf(&b, "  - host: registry-%d.example.org\n    ports: [80, 443]\n", i)
		case 9:
			fmt.Fprintf(&b, "  - cidr: %d.%d.%d.0/24\n", 11+i/65536%100, i/256%256, i%256)
		}
	}
	b.WriteString("  - cidr: 149.154.160.0/20\n")
	return b.String()
}

var (
	bigOnce   sync.Once
	bigPolicy *policy.Policy
	bigErr    error
)

func loadBigPolicy(tb testing.TB) *policy.Policy {
	tb.Helper()
	bigOnce.Do(func() {
		bigPolicy, bigErr = policy.LoadBytes([]byte(bigPolicyYAML()), "bench.yaml")
	})
	if bigErr != nil {
		tb.Fatalf("load %d-rule policy: %v", decideRules, bigErr)
	}
	if n := len(bigPolicy.Rules()); n != decideRules+1 {
		tb.Fatalf("policy has %d rules, want %d", n, decideRules+1)
	}
	return bigPolicy
}

// decideCases are the requests measured; want is checked before timing so
// a benchmark of the wrong path cannot pass unnoticed.
var decideCases = []struct {
	name string
	req  policy.Request
	want vocab.Reason
}{
	{"exact_hit", policy.Request{Host: "api-4996.service-49.example.com", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonAllowlisted},
	{"wildcard_hit", policy.Request{Host: "a.b.c.tenant-4997.cdn-13.example.net", Port: 8443, Proto: vocab.ProtoConnect}, vocab.ReasonAllowlisted},
	{"miss", policy.Request{Host: "exfil.attacker-controlled.example", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonNotAllowlisted},
	{"miss_deep", policy.Request{Host: "x1.x2.x3.x4.x5.x6.x7.x8.tenant-4997.cdn-14.example.net", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonNotAllowlisted},
	{"port_denied", policy.Request{Host: "api-4996.service-49.example.com", Port: 22, Proto: vocab.ProtoConnect}, vocab.ReasonPortNotAllowed},
	{"dns_hit", policy.Request{Host: "x.tenant-4997.cdn-13.example.net", Proto: vocab.ProtoDNS}, vocab.ReasonAllowlisted},
	{"ip_literal", policy.Request{Host: "149.154.167.220", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonAllowlisted},
	{"ip_literal_miss", policy.Request{Host: "8.8.8.8", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonIPLiteralNotAllowed},
	{"ip_literal_octal_private", policy.Request{Host: "0177.0.0.1", Port: 80, Proto: vocab.ProtoHTTP}, vocab.ReasonPrivateAddress},
	{"ipv6_literal", policy.Request{Host: "[2606:4700::1111]", Port: 443, Proto: vocab.ProtoConnect}, vocab.ReasonIPLiteralNotAllowed},
}

func BenchmarkDecide(b *testing.B) {
	p := loadBigPolicy(b)
	for _, c := range decideCases {
		if got := p.Decide(c.req).Reason; got != c.want {
			b.Fatalf("%s: Decide(%q) reason %s, want %s", c.name, c.req.Host, got, c.want)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = p.Decide(c.req)
			}
		})
	}
	// Not canonical: upper case costs a lowercase copy (allocates).
	b.Run("uppercase_slow_path", func(b *testing.B) {
		req := policy.Request{Host: "API-4996.Service-49.Example.COM", Port: 443, Proto: vocab.ProtoConnect}
		b.ReportAllocs()
		for b.Loop() {
			_ = p.Decide(req)
		}
	})
}

var checkAddrCases = []struct {
	name string
	addr netip.Addr
}{
	{"public_v4", netip.MustParseAddr("149.154.167.220")},
	{"private_v4", netip.MustParseAddr("10.1.2.3")},
	{"metadata", netip.MustParseAddr("169.254.169.254")},
	{"public_v6", netip.MustParseAddr("2606:4700:4700::1111")},
	{"mapped_v4", netip.MustParseAddr("::ffff:192.168.1.1")},
	{"nat64", netip.MustParseAddr("64:ff9b::a9fe:a9fe")},
}

func BenchmarkCheckAddr(b *testing.B) {
	p, err := policy.LoadBytes([]byte("version: 1\nnetworks:\n  allow: [10.20.0.0/16, 192.168.50.0/24]\n  deny: [203.0.113.0/24, 8.8.8.0/24]\n"), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range checkAddrCases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = p.CheckAddr(c.addr)
			}
		})
	}
}

// TestDecideAllocs10k holds the benchmark's zero-allocation claim in the
// ordinary test run.
func TestDecideAllocs10k(t *testing.T) {
	p := loadBigPolicy(t)
	for _, c := range decideCases {
		if got := p.Decide(c.req).Reason; got != c.want {
			t.Errorf("%s: Decide(%q) reason %s, want %s", c.name, c.req.Host, got, c.want)
		}
		if n := testing.AllocsPerRun(200, func() { _ = p.Decide(c.req) }); n != 0 {
			t.Errorf("%s: Decide allocates %v times per call with %d rules, want 0", c.name, n, decideRules)
		}
	}
	for _, c := range checkAddrCases {
		if n := testing.AllocsPerRun(200, func() { _ = p.CheckAddr(c.addr) }); n != 0 {
			t.Errorf("%s: CheckAddr allocates %v times per call, want 0", c.name, n)
		}
	}
}
