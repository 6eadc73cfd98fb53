package dnsfilter

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
	"github.com/egressd/egressd/policy"
)

// spyResolver answers from a zone and remembers every name it was asked.
type spyResolver struct {
	zone  resolvertest.Handler
	mu    sync.Mutex
	asked []string
}

func (r *spyResolver) Exchange(_ context.Context, name string, qtype uint16) (*dns.Msg, error) {
	r.mu.Lock()
	r.asked = append(r.asked, name)
	r.mu.Unlock()
	q := new(dns.Msg).SetQuestion(dns.Fqdn(strings.ToLower(name)), qtype)
	m := r.zone("udp", q)
	m.Id = 0
	return m, nil
}

// grantedByBasePolicy is an oracle independent of the policy package: the
// names basePolicy grants, spelled in any case, with or without the dot.
func grantedByBasePolicy(name string) bool {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	return n == "granted.example" || (strings.HasSuffix(n, ".wild.example") && len(n) > len(".wild.example"))
}

func FuzzServeDNS(f *testing.F) {
	seed := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(mkQuery("granted.example.", dns.TypeA))
	seed(mkQuery("EvIl.ExAmPlE.", dns.TypeA))
	seed(mkQuery("a.b.wild.example.", dns.TypeAAAA))
	seed(mkQuery("svc.wild.example.", dns.TypeHTTPS))
	seed(mkQuery("granted.example.", dns.TypeTXT))
	seed(mkQuery(`x\.wild.example.`, dns.TypeA))
	seed(mkQuery("cnamepriv.wild.example.", dns.TypeA))
	edns := mkQuery("mixed.wild.example.", dns.TypeA)
	edns.SetEdns0(4096, true)
	seed(edns)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})

	p := loadPolicy(f, basePolicy)
	zone := resolvertest.Zone(testZone...)
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return // the server drops what does not parse
		}
		spy := &spyResolver{zone: zone}
		s := New(Config{Policy: func() *policy.Policy { return p }, Resolver: spy, Recorder: declog.Discard{}, Logger: quiet})
		w := newWriter()
		s.ServeDNS(w, m)
		if m.Response && w.writes != 0 {
			t.Errorf("answered a response")
		}
		if !m.Response && w.writes != 1 {
			t.Errorf("got %d replies, want 1", w.writes)
		}
		for _, name := range spy.asked {
			if !grantedByBasePolicy(name) {
				t.Errorf("forwarded ungranted name %q", name)
			}
		}
	})
}

// ExchangeUntil lets the spy's answers be kept as packed replies: each
// lives a minute from the spy's fixed now, its TTLs counting down to
// then as the resolver's do.
func (r *spyResolver) ExchangeUntil(ctx context.Context, name string, qtype uint16) (*dns.Msg, time.Time, error) {
	m, err := r.Exchange(ctx, name, qtype)
	if err != nil {
		return nil, time.Time{}, err
	}
	for _, rr := range append(m.Answer, m.Ns...) {
		rr.Header().Ttl = 60
	}
	return m, spyNow.Add(time.Minute), nil
}

func (r *spyResolver) Generation() uint64 { return 0 }

var spyNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func fuzzSeeds(f *testing.F) {
	for _, tc := range diffCases(f) {
		f.Add(tc.pkt)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
}

// FuzzParseQuery: whatever parseQuery accepts, miekg parses to the same
// query, the full path would take as well-formed, and the short replies
// built from the bytes are the ones makeReply packs.
func FuzzParseQuery(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		q := wireQuery{key: make([]byte, 0, 8)}
		if !parseQuery(b, &q) {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("accepted what miekg does not parse: %v", err)
		}
		if a := acceptQuery(header(b)); a != dns.MsgAccept {
			t.Fatalf("accepted what acceptQuery answers with %v", a)
		}
		if rcode, ok := checkShape(m); !ok {
			t.Fatalf("accepted what checkShape answers %s", dns.RcodeToString[rcode])
		}
		mq := m.Question[0]
		host := strings.ToLower(strings.TrimSuffix(mq.Name, "."))
		if strings.IndexByte(mq.Name, '\\') >= 0 || string(q.host()) != host {
			t.Fatalf("host %q, miekg's name %q", q.host(), mq.Name)
		}
		if q.id != m.Id || q.qtype != mq.Qtype || q.edns != (m.IsEdns0() != nil) || q.size != udpSize(m) ||
			(q.flags&bitRD != 0) != m.RecursionDesired || (q.flags&bitCD != 0) != m.CheckingDisabled {
			t.Fatalf("read %+v, miekg read %v", q, m)
		}
		for _, rcode := range []int{dns.RcodeNameError, dns.RcodeRefused, dns.RcodeServerFailure} {
			want, err := makeReply(m, outcome{rcode: rcode}).Pack()
			if err != nil {
				t.Fatal(err)
			}
			if got := appendShortReply(nil, &q, rcode); !bytes.Equal(got, want) {
				t.Fatalf("%s reply\n%x\nmakeReply packs\n%x", dns.RcodeToString[rcode], got, want)
			}
		}
	})
}

// FuzzUDPHandle runs any datagram through a UDP reader twice (the second
// time a granted answer may come from the reply cache): ungranted names
// are never forwarded, answers are never answered, and a query the fast
// path reads gets the bytes ServeDNS gives it.
func FuzzUDPHandle(f *testing.F) {
	fuzzSeeds(f)
	p := loadPolicy(f, basePolicy)
	zone := resolvertest.Zone(testZone...)
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, b []byte) {
		spy := &spyResolver{zone: zone}
		s := New(Config{Policy: func() *policy.Policy { return p }, Resolver: spy, Recorder: declog.Discard{},
			Logger: quiet, Clock: func() time.Time { return spyNow }})
		tr := newTestReader(s, netip.Addr{})
		var replies [][]byte
		for range 2 {
			if reply, _ := tr.ask(t, b); reply != nil {
				replies = append(replies, reply)
			}
		}
		for _, name := range spy.asked {
			if !grantedByBasePolicy(name) {
				t.Errorf("forwarded ungranted name %q", name)
			}
		}
		if len(b) >= headerLen && b[2]&0x80 != 0 && len(replies) > 0 {
			t.Errorf("answered a response")
		}
		var q wireQuery
		if !parseQuery(b, &q) {
			return
		}
		if len(replies) != 2 {
			t.Fatalf("a plain query got %d replies in 2 tries, want 2", len(replies))
		}
		if want := fullAsk(t, s, b); !bytes.Equal(replies[1], want) {
			t.Errorf("replied\n%x\nServeDNS replies\n%x", replies[1], want)
		}
	})
}
