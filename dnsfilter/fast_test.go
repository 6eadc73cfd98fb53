package dnsfilter

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsfilter/internal/udpserve"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
	"github.com/egressd/egressd/policy"
)

// capturePC is a net.PacketConn that keeps what is written to it; reads
// wait until it is closed.
type capturePC struct {
	mu     sync.Mutex
	writes [][]byte
	closed chan struct{}
	once   sync.Once
}

func newCapturePC() *capturePC { return &capturePC{closed: make(chan struct{})} }

func (c *capturePC) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}

func (c *capturePC) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, append([]byte(nil), b...))
	return len(b), nil
}

// take returns the writes so far and forgets them.
func (c *capturePC) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

func (c *capturePC) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *capturePC) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(172, 30, 0, 1), Port: 53} }
func (c *capturePC) SetDeadline(time.Time) error      { return nil }
func (c *capturePC) SetReadDeadline(time.Time) error  { return nil }
func (c *capturePC) SetWriteDeadline(time.Time) error { return nil }

// testReader drives one UDP handler of s without a socket.
type testReader struct {
	h  *udpHandler
	b  *udpserve.Batch
	pc *capturePC
}

// newTestReader's replies carry dst as their source when it is valid, as
// on a socket bound to every address.
func newTestReader(s *Server, dst netip.Addr) *testReader {
	pc := newCapturePC()
	return &testReader{h: s.newUDPHandler(), b: udpserve.NewBatch(pc, dst), pc: pc}
}

var testClient = netip.MustParseAddrPort("172.30.0.2:40000")

// handle runs one datagram as a reader does: answer, then the batch sent.
func (tr *testReader) handle(pkt []byte, now time.Time) {
	tr.h.Datagram(tr.b, pkt, testClient, now)
	tr.h.Sent()
}

// ask hands pkt to the handler and returns its reply (nil for none) and
// whether it was answered inline rather than on a goroutine.
func (tr *testReader) ask(tb testing.TB, pkt []byte) (reply []byte, inline bool) {
	tb.Helper()
	tr.handle(pkt, tr.h.s.clock())
	if replies, _ := tr.b.Replies(); len(replies) > 0 {
		if len(replies) > 1 {
			tb.Fatalf("%d inline replies to one datagram, want 1", len(replies))
		}
		tr.b.Reset()
		return bytes.Clone(replies[0]), true
	}
	tr.h.s.waiting.wg.Wait()
	w := tr.pc.take()
	if len(w) > 1 {
		tb.Fatalf("%d replies to one datagram, want 1", len(w))
	}
	if len(w) == 1 {
		return w[0], false
	}
	return nil, false
}

// fullAsk is the reference the fast path must equal: ServeDNS on the
// message as miekg unpacks it (nil reply when it
// does not unpack: checkedReader drops it).
func fullAsk(tb testing.TB, s *Server, pkt []byte) []byte {
	tb.Helper()
	m := new(dns.Msg)
	if len(pkt) < headerLen || m.Unpack(pkt) != nil {
		s.malformedFrom(testClient.Addr())
		return nil
	}
	w := &testWriter{remote: net.UDPAddrFromAddrPort(testClient)}
	s.ServeDNS(w, m)
	return w.raw
}

func pack(tb testing.TB, m *dns.Msg) []byte {
	tb.Helper()
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// q builds a query for name and qtype, edited by edits.
func q(name string, qtype uint16, edits ...func(*dns.Msg)) *dns.Msg {
	m := mkQuery(name, qtype)
	m.Id = 0x1234
	for _, e := range edits {
		e(m)
	}
	return m
}

func withEDNS(size uint16, do bool, opts ...dns.EDNS0) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(size, do)
		m.IsEdns0().Option = append(m.IsEdns0().Option, opts...)
	}
}

func withID(id uint16) func(*dns.Msg) { return func(m *dns.Msg) { m.Id = id } }

// TestReplyCacheFollowsPolicyAndResolver: a kept reply is used only while
// the policy, the resolver's cache and the answer's TTL that made it
// last, and its TTLs count down with the resolver's.
func TestReplyCacheFollowsPolicyAndResolver(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	var mu sync.Mutex
	p := loadPolicy(t, basePolicy)
	e.srv.policy = func() *policy.Policy { mu.Lock(); defer mu.Unlock(); return p }
	tr := newTestReader(e.srv, netip.Addr{})
	ask := func() (*dns.Msg, bool) {
		t.Helper()
		b, inline := tr.ask(t, pack(t, q("granted.example.", dns.TypeA)))
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		return m, inline
	}
	if _, inline := ask(); inline {
		t.Fatal("first query answered inline, want it resolved")
	}
	m, inline := ask()
	if !inline || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 60 {
		t.Fatalf("second query: inline %v, %v; want inline, TTL 60", inline, m.Answer)
	}
	e.clock.Advance(25*time.Second + time.Millisecond)
	if m, _ := ask(); m.Answer[0].Header().Ttl != 34 {
		t.Errorf("after 25s: TTL %d, want 34", m.Answer[0].Header().Ttl)
	}

	// A reload that denies the address: the kept reply is not used.
	mu.Lock()
	p = loadPolicy(t, basePolicy+"networks:\n  deny: [93.184.215.0/24]\n")
	mu.Unlock()
	if m, inline := ask(); inline || m.Rcode != dns.RcodeNameError {
		t.Errorf("after reload: inline %v, %s; want resolved again, NXDOMAIN", inline, dns.RcodeToString[m.Rcode])
	}
	// A reload that drops the grant: denied inline, whatever was kept.
	mu.Lock()
	p = loadPolicy(t, "version: 1\nallow:\n  - host: other.example\n")
	mu.Unlock()
	if m, inline := ask(); !inline || m.Rcode != dns.RcodeNameError || e.rec.Last(t).Reason != vocab.ReasonNotAllowlisted {
		t.Errorf("after revoking: inline %v, %s, %s; want inline NXDOMAIN not_allowlisted", inline, dns.RcodeToString[m.Rcode], e.rec.Last(t).Reason)
	}
	mu.Lock()
	p = loadPolicy(t, basePolicy)
	mu.Unlock()
	ask()
	if _, inline := ask(); !inline {
		t.Fatal("kept again: want inline")
	}
	// A resolver flush drops what was kept.
	before := e.up.Count("granted.example.", dns.TypeA)
	e.res.Flush()
	if _, inline := ask(); inline || e.up.Count("granted.example.", dns.TypeA) != before+1 {
		t.Errorf("after flush: inline %v, upstream asked %d more times; want resolved again, once", inline, e.up.Count("granted.example.", dns.TypeA)-before)
	}
	// Expiry: at the resolver entry's end the reply is not used.
	ask()
	e.clock.Advance(60 * time.Second)
	if _, inline := ask(); inline {
		t.Error("after expiry: answered inline, want resolved again")
	}
}

// TestFastPathAllocs: a query answered from the reply cache allocates
// nothing, a denial at most the name it logs.
func TestFastPathAllocs(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	e.srv.rec = declog.Discard{}
	tr := newTestReader(e.srv, netip.MustParseAddr("172.30.0.1"))
	hit := pack(t, q("GrAnTeD.example.", dns.TypeA, withEDNS(1232, false)))
	fullAsk(t, e.srv, pack(t, q("granted.example.", dns.TypeA, withEDNS(1232, false))))
	tr.handle(hit, e.srv.clock())
	replies, oob := tr.b.Replies()
	if len(replies) != 1 {
		t.Fatal("cache hit answered on a goroutine")
	}
	if len(oob[0]) == 0 {
		t.Error("reply carries no source address")
	}
	tr.b.Reset()
	tests := []struct {
		name string
		pkt  []byte
		max  float64
	}{
		{"cache hit", hit, 0},
		{"denied", pack(t, q("evil.example.", dns.TypeA)), 1},
		{"qtype refused", pack(t, q("granted.example.", dns.TypeTXT)), 1},
	}
	for _, tc := range tests {
		got := testing.AllocsPerRun(100, func() {
			tr.handle(tc.pkt, e.srv.clock())
			tr.b.Reset()
		})
		if got > tc.max {
			t.Errorf("%s: %v allocations per query, want at most %v", tc.name, got, tc.max)
		}
	}
}

// TestFastPathRateLimit: the fast path charges the same per-client limit
// and logs a limited client once per window.
func TestFastPathRateLimit(t *testing.T) {
	yaml := basePolicy[:len(basePolicy)-len("  dns: {rps: 1000, burst: 1000}\n")] + "  dns: {rps: 1, burst: 2}\n"
	e := newEnv(t, yaml, resolvertest.Zone(testZone...))
	tr := newTestReader(e.srv, netip.Addr{})
	fullAsk(t, e.srv, pack(t, q("granted.example.", dns.TypeA))) // one token
	refused := 0
	for range 6 {
		b, inline := tr.ask(t, pack(t, q("granted.example.", dns.TypeA)))
		if !inline {
			t.Fatal("answered on a goroutine, want inline")
		}
		if b[3]&0xF == dns.RcodeRefused {
			refused++
		}
	}
	if refused != 5 {
		t.Errorf("refused %d of 6 with one token left, want 5", refused)
	}
	n := 0
	for _, en := range e.rec.All() {
		if en.Reason == vocab.ReasonRateLimited {
			n++
		}
	}
	if n != 1 {
		t.Errorf("logged %d rate_limited lines, want 1", n)
	}
}

// TestServeDualStack: replies on an IPv6 socket bound to every address
// reach IPv4 and IPv6 clients alike, from the address each asked.
func TestServeDualStack(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	if probe, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		probe.Close()
	}
	pc, err := net.ListenPacket("udp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer serveUDP(t, e, pc)()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	for _, host := range []string{"127.0.0.1", "127.0.0.2", "::1"} {
		c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		for range 2 { // resolved, then from the reply cache
			r, _, err := c.Exchange(mkQuery("granted.example.", dns.TypeA), addr)
			if err != nil {
				t.Fatalf("%s: %v", host, err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Errorf("%s: got %s with %d answers", host, dns.RcodeToString[r.Rcode], len(r.Answer))
			}
		}
	}
}

// BenchmarkFastPath is one reader's work per query, without the socket:
// a granted name from the reply cache, and a denied one.
func BenchmarkFastPath(b *testing.B) {
	yaml := basePolicy[:len(basePolicy)-len("  dns: {rps: 1000, burst: 1000}\n")] + "  dns: {rps: 1000000000, burst: 1000000000}\n"
	up := resolvertest.Start(b, resolvertest.Zone(testZone...))
	p := loadPolicy(b, yaml)
	s := New(Config{
		Policy:   func() *policy.Policy { return p },
		Resolver: resolver.New(resolver.Config{Upstreams: []string{up.Addr}}),
	})
	tr := newTestReader(s, netip.Addr{})
	hit := pack(b, q("granted.example.", dns.TypeA))
	if _, inline := tr.ask(b, hit); inline {
		b.Fatal("warm-up answered inline")
	}
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"cached-granted", hit},
		{"denied", pack(b, q("denied.example.", dns.TypeA))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tr.handle(bc.pkt, time.Now())
				tr.b.Reset()
			}
		})
	}
}

// TestTooManyWaiting: with every slot for resolver waits taken, a granted
// query is answered SERVFAIL at once (resolve_failed, as when the
// resolver itself is too busy), by the fast path and the full path alike,
// and nothing is forwarded.
func TestTooManyWaiting(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	e.srv.waiting.slots = make(chan struct{}) // no room at all
	tr := newTestReader(e.srv, netip.Addr{})
	subnet := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(198, 51, 100, 0)}
	for _, m := range []*dns.Msg{q("granted.example.", dns.TypeA), q("granted.example.", dns.TypeA, withEDNS(1232, false, subnet))} {
		b, inline := tr.ask(t, pack(t, m))
		if !inline || b[3]&0xF != dns.RcodeServerFailure {
			t.Errorf("got inline %v, rcode %d; want inline SERVFAIL", inline, b[3]&0xF)
		}
		if got := e.rec.Last(t); got.Reason != vocab.ReasonResolveFailed || got.Host != "granted.example" {
			t.Errorf("logged %s for %q, want resolve_failed for granted.example", got.Reason, got.Host)
		}
	}
	if n := e.up.Total(); n != 0 {
		t.Errorf("upstream got %d queries, want 0", n)
	}
}

// TestReplyFromAddressAsked: on a socket bound to every address, a reply
// leaves from the address the query was sent to (as miekg's server sends
// it), or a client that checks the source, as connected sockets do,
// never sees it.
func TestReplyFromAddressAsked(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer serveUDP(t, e, pc)()
	addr := net.JoinHostPort("127.0.0.2", strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
	for _, name := range []string{"granted.example.", "granted.example.", "evil.example."} {
		c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
		if _, _, err := c.Exchange(mkQuery(name, dns.TypeA), addr); err != nil {
			t.Errorf("%s via 127.0.0.2: %v", name, err)
		}
	}
}

// serveUDP runs e's server on pc alone; the returned stop ends it and
// fails the test if Serve did.
func serveUDP(t *testing.T, e *testEnv, pc net.PacketConn) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, pc, nil) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}
