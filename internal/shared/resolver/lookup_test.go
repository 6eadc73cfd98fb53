package resolver

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

func TestLookupNetIP(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone(
		soa,
		"www.example. 60 IN CNAME mid.example.",
		"mid.example. 60 IN CNAME end.example.",
		"end.example. 60 IN A 192.0.2.10",
		"end.example. 60 IN AAAA 2001:db8::10",
		"mapped.example. 60 IN AAAA ::ffff:10.1.2.3",
		"v4only.example. 60 IN A 192.0.2.4",
	))
	tests := []struct {
		host    string
		want    []string
		wantErr error
	}{
		{"www.example", []string{"192.0.2.10", "2001:db8::10"}, nil},
		{"WWW.EXAMPLE.", []string{"192.0.2.10", "2001:db8::10"}, nil},
		{"mapped.example", []string{"10.1.2.3"}, nil},
		{"v4only.example", []string{"192.0.2.4"}, nil},
		{"192.0.2.99", []string{"192.0.2.99"}, nil},
		{"[2001:db8::5]", []string{"2001:db8::5"}, nil},
		{"nx.example", nil, ErrNotFound},
	}
	r := newTestResolver(t, nil, up)
	for _, tc := range tests {
		got, err := r.LookupNetIP(context.Background(), tc.host)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("LookupNetIP(%q): got error %v, want %v", tc.host, err, tc.wantErr)
			continue
		}
		if !equalAddrs(got, tc.want) {
			t.Errorf("LookupNetIP(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
	// A second round is answered from the cache in place (LookupCached):
	// the same addresses and errors, and no query upstream.
	before := up.Total()
	for _, tc := range tests {
		got, err := r.LookupNetIP(context.Background(), tc.host)
		if !errors.Is(err, tc.wantErr) || !equalAddrs(got, tc.want) {
			t.Errorf("cached LookupNetIP(%q) = %v, %v; want %v, %v", tc.host, got, err, tc.want, tc.wantErr)
		}
	}
	if up.Total() != before {
		t.Errorf("second round reached the upstream %d times; want none", up.Total()-before)
	}
	if _, ok, _ := r.LookupCached("www.example"); !ok {
		t.Errorf("LookupCached(www.example): not answered from the cache")
	}
	// Proxy and DNS share the cache: the names looked up above are cached.
	before = up.Total()
	mustExchange(t, r, "www.example", dns.TypeA)
	if up.Total() != before {
		t.Errorf("Exchange after LookupNetIP reached the upstream; want a cache hit")
	}
}

// An IPv4-only name read from the cache costs its fully qualified spelling
// and its address slice, and nothing for the missing family, whose
// not-found is never formatted.
func TestLookupCachedIPv4OnlyAllocs(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone(soa, "v4only.example. 60 IN A 192.0.2.4"))
	r := newTestResolver(t, nil, up)
	if _, err := r.LookupNetIP(context.Background(), "v4only.example"); err != nil {
		t.Fatalf("LookupNetIP: %v", err)
	}
	got := testing.AllocsPerRun(100, func() {
		if _, ok, _ := r.LookupCached("v4only.example"); !ok {
			t.Fatal("LookupCached: not cached")
		}
	})
	if got > 2 {
		t.Errorf("LookupCached of an IPv4-only name: got %v allocations, want at most 2 (name, address slice)", got)
	}
}

func TestLookupNetIPChasesIncompleteChain(t *testing.T) {
	// An upstream that returns only the CNAME (as some forwarders do).
	up := resolvertest.Start(t, func(_ string, q *dns.Msg) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		var rr dns.RR
		switch name := q.Question[0].Name; {
		case name == "alias.example." && q.Question[0].Qtype == dns.TypeA:
			rr, _ = dns.NewRR("alias.example. 60 IN CNAME target.example.")
		case name == "target.example." && q.Question[0].Qtype == dns.TypeA:
			rr, _ = dns.NewRR("target.example. 60 IN A 192.0.2.33")
		default:
			return m
		}
		m.Answer = []dns.RR{rr}
		return m
	})
	r := newTestResolver(t, nil, up)
	got, err := r.LookupNetIP(context.Background(), "alias.example")
	if err != nil || !equalAddrs(got, []string{"192.0.2.33"}) {
		t.Errorf("got %v, %v; want [192.0.2.33]", got, err)
	}
}

func TestChainEnd(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	loop := []dns.RR{rr("a. 1 IN CNAME b."), rr("b. 1 IN CNAME a.")}
	if _, ok := ChainEnd(loop, "a."); ok {
		t.Error("ChainEnd on a loop: got ok, want false")
	}
	chain := []dns.RR{rr("b. 1 IN CNAME C."), rr("A. 1 IN CNAME b."), rr("c. 1 IN A 192.0.2.1")}
	if end, ok := ChainEnd(chain, "a."); !ok || end != "C." {
		t.Errorf("ChainEnd = %q, %v; want \"C.\", true", end, ok)
	}
	if n := testing.AllocsPerRun(100, func() { ChainEnd(chain, "a.") }); n != 0 {
		t.Errorf("ChainEnd allocates %v times, want 0", n)
	}
}

func equalAddrs(got []netip.Addr, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].String() != want[i] {
			return false
		}
	}
	return true
}
