package dnsfilter

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/declog"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/resolver/resolvertest"
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
	seed(query("granted.example.", dns.TypeA))
	seed(query("EvIl.ExAmPlE.", dns.TypeA))
	seed(query("a.b.wild.example.", dns.TypeAAAA))
	seed(query("svc.wild.example.", dns.TypeHTTPS))
	seed(query("granted.example.", dns.TypeTXT))
	seed(query(`x\.wild.example.`, dns.TypeA))
	seed(query("cnamepriv.wild.example.", dns.TypeA))
	edns := query("mixed.wild.example.", dns.TypeA)
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
