package resolver

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

const soa = "example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 30"

func newTestResolver(t *testing.T, clock *testutil.Clock, ups ...*resolvertest.Upstream) *Resolver {
	t.Helper()
	cfg := Config{Timeout: 300 * time.Millisecond}
	for _, u := range ups {
		cfg.Upstreams = append(cfg.Upstreams, u.Addr)
	}
	if clock != nil {
		cfg.Clock = clock.Now
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return New(cfg)
}

func mustExchange(t *testing.T, r *Resolver, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m, err := r.Exchange(context.Background(), name, qtype)
	if err != nil {
		t.Fatalf("Exchange(%s, %s): %v", name, dns.Type(qtype), err)
	}
	return m
}

func TestExchangeCacheHitSkipsUpstream(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone("www.example. 60 IN A 192.0.2.1"))
	r := newTestResolver(t, testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), up)

	first := mustExchange(t, r, "www.example.", dns.TypeA)
	// The caller owns its copy: scribbling on it must not reach the cache.
	first.Answer[0].(*dns.A).A[3] = 99
	first.Answer = nil

	for _, name := range []string{"www.example.", "WWW.Example", "wWw.eXample."} {
		m := mustExchange(t, r, name, dns.TypeA)
		if len(m.Answer) != 1 {
			t.Fatalf("%s: got %d answers, want 1", name, len(m.Answer))
		}
		if got := m.Answer[0].(*dns.A).A.String(); got != "192.0.2.1" {
			t.Errorf("%s: got %s, want 192.0.2.1", name, got)
		}
		if m.Id != 0 || len(m.Extra) != 0 {
			t.Errorf("%s: got id %d and %d extra records, want 0 and 0", name, m.Id, len(m.Extra))
		}
	}
	if got := up.Count("www.example.", dns.TypeA); got != 1 {
		t.Errorf("upstream got %d queries, want 1", got)
	}
}

func TestExchangeTTL(t *testing.T) {
	tests := []struct {
		name     string
		records  []string
		qname    string
		min, max time.Duration
		wantTTL  time.Duration // cached this long exactly
	}{
		{"honoured", []string{"a.example. 60 IN A 192.0.2.1"}, "a.example.", 5 * time.Second, 5 * time.Minute, 60 * time.Second},
		{"min clamp", []string{"a.example. 1 IN A 192.0.2.1"}, "a.example.", 5 * time.Second, 5 * time.Minute, 5 * time.Second},
		{"max clamp", []string{"a.example. 86400 IN A 192.0.2.1"}, "a.example.", 5 * time.Second, 5 * time.Minute, 5 * time.Minute},
		{"lowest in answer", []string{"a.example. 600 IN CNAME b.example.", "b.example. 40 IN A 192.0.2.1"}, "a.example.", time.Second, time.Hour, 40 * time.Second},
		{"nxdomain soa minimum", []string{soa}, "nx.example.", 5 * time.Second, 5 * time.Minute, 30 * time.Second},
		{"nxdomain soa ttl lower", []string{"example. 10 IN SOA ns.example. host.example. 1 3600 600 86400 300"}, "nx.example.", time.Second, time.Hour, 10 * time.Second},
		{"nxdomain without soa", nil, "nx.example.", 7 * time.Second, 5 * time.Minute, 7 * time.Second},
		{"nodata", []string{soa, "a.example. 60 IN AAAA 2001:db8::1"}, "a.example.", 5 * time.Second, 5 * time.Minute, 30 * time.Second},
		{"negative max clamp", []string{"example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 3600"}, "nx.example.", time.Second, 20 * time.Second, 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := resolvertest.Start(t, resolvertest.Zone(tc.records...))
			clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
			r := New(Config{Upstreams: []string{up.Addr}, MinTTL: tc.min, MaxTTL: tc.max, Clock: clock.Now, Timeout: time.Second})

			m := mustExchange(t, r, tc.qname, dns.TypeA)
			for _, rr := range append(m.Answer, m.Ns...) {
				if got, want := time.Duration(rr.Header().Ttl)*time.Second, tc.wantTTL; got != want {
					t.Errorf("fresh %s: got ttl %s, want %s", rr.Header().Name, got, want)
				}
			}
			clock.Advance(tc.wantTTL - time.Second)
			m = mustExchange(t, r, tc.qname, dns.TypeA)
			if got := up.Count(tc.qname, dns.TypeA); got != 1 {
				t.Fatalf("before expiry: upstream got %d queries, want 1", got)
			}
			for _, rr := range append(m.Answer, m.Ns...) {
				if got := rr.Header().Ttl; got != 1 {
					t.Errorf("1s before expiry: got ttl %d, want 1", got)
				}
			}
			clock.Advance(time.Second)
			mustExchange(t, r, tc.qname, dns.TypeA)
			if got := up.Count(tc.qname, dns.TypeA); got != 2 {
				t.Errorf("at expiry: upstream got %d queries, want 2", got)
			}
		})
	}
}

func TestExchangeServfailNotCached(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			up := resolvertest.Start(t, func(_ string, q *dns.Msg) *dns.Msg {
				return new(dns.Msg).SetRcode(q, rcode)
			})
			r := newTestResolver(t, testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), up)
			for i := 1; i <= 2; i++ {
				_, err := r.Exchange(context.Background(), "a.example.", dns.TypeA)
				if !errors.Is(err, ErrUpstream) {
					t.Fatalf("try %d: got error %v, want ErrUpstream", i, err)
				}
				if got := up.Count("a.example.", dns.TypeA); got != i {
					t.Errorf("try %d: upstream got %d queries, want %d", i, got, i)
				}
			}
		})
	}
}

func TestExchangeCoalesces(t *testing.T) {
	const callers = 25
	arrived := make(chan struct{}, callers)
	release := make(chan struct{})
	answer := resolvertest.Zone("slow.example. 60 IN A 192.0.2.7")
	up := resolvertest.Start(t, func(network string, q *dns.Msg) *dns.Msg {
		arrived <- struct{}{}
		<-release
		return answer(network, q)
	})
	r := New(Config{Upstreams: []string{up.Addr}, Timeout: 10 * time.Second})

	errs := make(chan error, callers)
	for range callers {
		go func() {
			m, err := r.Exchange(context.Background(), "Slow.Example.", dns.TypeA)
			if err == nil && len(m.Answer) != 1 {
				err = errors.New("no answer")
			}
			errs <- err
		}()
	}
	<-arrived
	k := key{name: "slow.example.", qtype: dns.TypeA}
	deadline := time.Now().Add(5 * time.Second)
	for r.flights.waiting(k) < callers {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d callers joined the flight", r.flights.waiting(k), callers)
		}
		time.Sleep(time.Millisecond) // polling a real condition, bounded by deadline
	}
	close(release)
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("caller: %v", err)
		}
	}
	if got := up.Count("slow.example.", dns.TypeA); got != 1 {
		t.Errorf("upstream got %d queries for %d concurrent callers, want 1", got, callers)
	}
}

func TestExchangeFailover(t *testing.T) {
	dead := resolvertest.Start(t, func(string, *dns.Msg) *dns.Msg { return nil })
	live := resolvertest.Start(t, resolvertest.Zone("a.example. 60 IN A 192.0.2.1", "b.example. 60 IN A 192.0.2.2"))
	r := New(Config{Upstreams: []string{dead.Addr, live.Addr}, Timeout: 200 * time.Millisecond})

	start := time.Now()
	mustExchange(t, r, "a.example.", dns.TypeA)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("failover took %s, want about one timeout (200ms)", el)
	}
	if got := dead.Total(); got != 1 {
		t.Errorf("dead upstream got %d queries, want 1", got)
	}
	// The live upstream answered last, so it is asked first now.
	mustExchange(t, r, "b.example.", dns.TypeA)
	if got := dead.Total(); got != 1 {
		t.Errorf("dead upstream got %d queries after failover, want still 1", got)
	}
	if got := live.Total(); got != 2 {
		t.Errorf("live upstream got %d queries, want 2", got)
	}
}

func TestExchangeAllUpstreamsDownIsBounded(t *testing.T) {
	dead1 := resolvertest.Start(t, func(string, *dns.Msg) *dns.Msg { return nil })
	dead2 := resolvertest.Start(t, func(string, *dns.Msg) *dns.Msg { return nil })
	r := New(Config{Upstreams: []string{dead1.Addr, dead2.Addr}, Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := r.Exchange(context.Background(), "a.example.", dns.TypeA)
	el := time.Since(start)
	if !errors.Is(err, ErrUpstream) {
		t.Errorf("got error %v, want ErrUpstream", err)
	}
	if el > time.Second {
		t.Errorf("gave up after %s, want at most ~300ms (timeout × (upstreams+1))", el)
	}
	if dead1.Total() != 1 || dead2.Total() != 1 {
		t.Errorf("got %d and %d queries, want 1 each", dead1.Total(), dead2.Total())
	}
}

func TestExchangeNoUpstreams(t *testing.T) {
	r := New(Config{Upstreams: []string{"not-an-ip:53"}, Logger: slog.New(slog.DiscardHandler)})
	if _, err := r.Exchange(context.Background(), "a.example.", dns.TypeA); !errors.Is(err, ErrNoUpstreams) {
		t.Errorf("got %v, want ErrNoUpstreams", err)
	}
}

func TestExchangeContextCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := resolvertest.Start(t, func(string, *dns.Msg) *dns.Msg { <-release; return nil })
	r := New(Config{Upstreams: []string{up.Addr}, Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Exchange(ctx, "a.example.", dns.TypeA)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("returned after %s, want about 50ms", el)
	}
}

func TestExchangeTruncatedRetriesTCP(t *testing.T) {
	zone := resolvertest.Zone("big.example. 60 IN A 192.0.2.1", "big.example. 60 IN A 192.0.2.2")
	up := resolvertest.Start(t, func(network string, q *dns.Msg) *dns.Msg {
		if network == "udp" {
			m := new(dns.Msg).SetReply(q)
			m.Truncated = true
			return m
		}
		return zone(network, q)
	})
	r := newTestResolver(t, nil, up)
	m := mustExchange(t, r, "big.example.", dns.TypeA)
	if len(m.Answer) != 2 || m.Truncated {
		t.Errorf("got %d answers, truncated %v; want 2, false", len(m.Answer), m.Truncated)
	}
	if u, tc := up.CountNet("big.example.", dns.TypeA, "udp"), up.CountNet("big.example.", dns.TypeA, "tcp"); u != 1 || tc != 1 {
		t.Errorf("got %d udp and %d tcp queries, want 1 and 1", u, tc)
	}
}

func TestExchangeChecksQuestion(t *testing.T) {
	tests := []struct {
		name    string
		reply   string // owner name the upstream echoes
		wantErr bool
	}{
		{"same", "a.example.", false},
		{"case randomised (0x20)", "A.eXaMpLe.", false},
		{"other name", "evil.example.", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := resolvertest.Start(t, func(_ string, q *dns.Msg) *dns.Msg {
				m := new(dns.Msg).SetReply(q)
				m.Question[0].Name = tc.reply
				rr, _ := dns.NewRR(tc.reply + " 60 IN A 192.0.2.1")
				m.Answer = []dns.RR{rr}
				return m
			})
			r := newTestResolver(t, nil, up)
			_, err := r.Exchange(context.Background(), "a.example.", dns.TypeA)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Errorf("got error %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestExchangeBadName(t *testing.T) {
	r := New(Config{Upstreams: []string{"127.0.0.1:1"}})
	for _, name := range []string{"", ".", "a..b"} {
		if _, err := r.Exchange(context.Background(), name, dns.TypeA); !errors.Is(err, ErrBadName) {
			t.Errorf("Exchange(%q): got %v, want ErrBadName", name, err)
		}
	}
}

func TestCacheBounded(t *testing.T) {
	records := []string{}
	for i := range 50 {
		records = append(records, dns.Fqdn(string(rune('a'+i%26))+string(rune('a'+i/26))+".example")+" 60 IN A 192.0.2.1")
	}
	up := resolvertest.Start(t, resolvertest.Zone(records...))
	r := New(Config{Upstreams: []string{up.Addr}, CacheSize: 10, Timeout: time.Second})
	for i := range 50 {
		mustExchange(t, r, string(rune('a'+i%26))+string(rune('a'+i/26))+".example.", dns.TypeA)
		if got := r.cache.len(); got > 10 {
			t.Fatalf("after %d names: cache holds %d, want at most 10", i+1, got)
		}
	}
	if err := r.Reconfigure(Config{Upstreams: []string{up.Addr}, CacheSize: 3}); err != nil {
		t.Fatal(err)
	}
	if got := r.cache.len(); got > 3 {
		t.Errorf("after shrinking: cache holds %d, want at most 3", got)
	}
}

func TestReconfigure(t *testing.T) {
	old := resolvertest.Start(t, resolvertest.Zone("a.example. 60 IN A 192.0.2.1"))
	repl := resolvertest.Start(t, resolvertest.Zone("a.example. 60 IN A 198.51.100.1"))
	r := newTestResolver(t, nil, old)
	mustExchange(t, r, "a.example.", dns.TypeA)

	if err := r.Reconfigure(Config{Upstreams: []string{"example.com:53"}}); err == nil {
		t.Error("Reconfigure with a host name upstream: got nil error, want one")
	}
	if err := r.Reconfigure(Config{Upstreams: []string{repl.Addr}, Timeout: time.Second}); err != nil {
		t.Fatalf("Reconfigure to the new upstream: %v", err)
	}
	m := mustExchange(t, r, "a.example.", dns.TypeA)
	if got := m.Answer[0].(*dns.A).A.String(); got != "198.51.100.1" {
		t.Errorf("after switching upstreams got %s, want 198.51.100.1 (cache flushed)", got)
	}
}

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = error
	}{
		{"127.0.0.11:53", "127.0.0.11:53"},
		{"127.0.0.11", "127.0.0.11:53"},
		{"[::1]:5353", "[::1]:5353"},
		{"::1", "[::1]:53"},
		{"[::ffff:10.0.0.1]:53", "10.0.0.1:53"},
		{"dns.google:53", ""},
		{"1.2.3.4:0", ""},
		{"[fe80::1%eth0]:53", ""},
		{"", ""},
	}
	for _, tc := range tests {
		ap, err := parseUpstream(tc.in)
		got := ""
		if err == nil {
			got = ap.String()
		}
		if got != tc.want {
			t.Errorf("parseUpstream(%q) = %q (err %v), want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestGroupBusy(t *testing.T) {
	var g group
	g.init(1)
	release := make(chan struct{})
	c, err := g.join(key{"a.", 1}, func(key) (*entry, error) { <-release; return nil, errors.New("x") })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.join(key{"b.", 1}, nil); !errors.Is(err, ErrBusy) {
		t.Errorf("second distinct flight: got %v, want ErrBusy", err)
	}
	close(release)
	<-c.done
}

// TestExchangeUntilAndGeneration: the expiry returned is the cache
// entry's (the TTLs count down to it, from the cache as from upstream),
// and every flush bumps the generation while other changes do not.
func TestExchangeUntilAndGeneration(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone("a.example. 60 IN A 192.0.2.1"))
	other := resolvertest.Start(t, resolvertest.Zone("a.example. 60 IN A 192.0.2.1"))
	clock := testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	r := newTestResolver(t, clock, up)
	want := clock.Now().Add(60 * time.Second)
	for _, step := range []time.Duration{0, 20 * time.Second} {
		clock.Advance(step)
		m, until, err := r.ExchangeUntil(context.Background(), "a.example.", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if !until.Equal(want) {
			t.Errorf("after %s: until %v, want %v", step, until, want)
		}
		if got, left := m.Answer[0].Header().Ttl, uint32(until.Sub(clock.Now())/time.Second); got != left {
			t.Errorf("after %s: TTL %d, want the %d s left", step, got, left)
		}
	}
	gens := []uint64{r.Generation()}
	r.Flush()
	gens = append(gens, r.Generation())
	if err := r.Reconfigure(Config{Upstreams: []string{up.Addr}, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	gens = append(gens, r.Generation()) // same upstreams: no flush
	if err := r.Reconfigure(Config{Upstreams: []string{other.Addr}}); err != nil {
		t.Fatal(err)
	}
	gens = append(gens, r.Generation())
	if want := []uint64{0, 1, 1, 2}; !slices.Equal(gens, want) {
		t.Errorf("generations %v, want %v", gens, want)
	}
}
