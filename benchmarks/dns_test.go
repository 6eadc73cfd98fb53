package benchmarks

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsfilter"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
	"github.com/egressd/egressd/policy"
)

// dnsBenchPolicy grants one name and lifts the per-client DNS limit out of
// the way: every benchmark query comes from one client.
const dnsBenchPolicy = `version: 1
allow:
  - host: granted.example
limits:
  dns: {rps: 1000000000, burst: 1000000000}
`

// dnsBench is the DNS server wired as the daemon wires it, with an
// in-process upstream on 127.0.0.1.
type dnsBench struct {
	up  *resolvertest.Upstream
	srv *dnsfilter.Server
}

func newDNSBench(b *testing.B) *dnsBench {
	b.Helper()
	path := filepath.Join(b.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(dnsBenchPolicy), 0o600); err != nil {
		b.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		b.Fatalf("policy.Load: %v", err)
	}
	up := resolvertest.Start(b, resolvertest.Zone(
		"granted.example. 300 IN A 93.184.215.14",
		"granted.example. 300 IN A 93.184.215.15",
	))
	res := resolver.New(resolver.Config{Upstreams: []string{up.Addr}, Timeout: time.Second})
	srv := dnsfilter.New(dnsfilter.Config{
		Policy:   func() *policy.Policy { return p },
		Resolver: res,
		Recorder: declog.Discard{},
	})
	return &dnsBench{up: up, srv: srv}
}

// packWriter packs each reply as the real server does, then drops it.
type packWriter struct {
	rcode int
	bytes int
}

var (
	benchLocal  net.Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	benchRemote net.Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
)

func (w *packWriter) LocalAddr() net.Addr  { return benchLocal }
func (w *packWriter) RemoteAddr() net.Addr { return benchRemote }
func (w *packWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	w.rcode, w.bytes = m.Rcode, len(b)
	return err
}
func (w *packWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *packWriter) Close() error                { return nil }
func (w *packWriter) TsigStatus() error           { return nil }
func (w *packWriter) TsigTimersOnly(bool)         {}
func (w *packWriter) Hijack()                     {}

// BenchmarkDNS measures the allow-list DNS server's handler in process:
// a granted name answered from the cache, and a denied name (NXDOMAIN,
// never forwarded). The udp variants go through real loopback sockets,
// for comparison with other servers (dnsmasq) measured the same way.
func BenchmarkDNS(b *testing.B) {
	env := newDNSBench(b)
	granted := new(dns.Msg).SetQuestion("granted.example.", dns.TypeA)
	denied := new(dns.Msg).SetQuestion("denied.example.", dns.TypeA)

	// Warm the cache; the upstream must then see nothing more.
	w := &packWriter{}
	env.srv.ServeDNS(w, granted)
	if w.rcode != dns.RcodeSuccess {
		b.Fatalf("warm-up: got %s, want NOERROR", dns.RcodeToString[w.rcode])
	}

	addr := serveDNSBench(b, env.srv)
	for _, bc := range []struct {
		name  string
		q     *dns.Msg
		rcode int
	}{
		{"cached-granted", granted, dns.RcodeSuccess},
		{"denied", denied, dns.RcodeNameError},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			w := &packWriter{}
			for b.Loop() {
				env.srv.ServeDNS(w, bc.q)
			}
			if w.rcode != bc.rcode {
				b.Fatalf("got %s, want %s", dns.RcodeToString[w.rcode], dns.RcodeToString[bc.rcode])
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
		b.Run("udp-"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				co, err := dns.Dial("udp", addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer co.Close()
				q := bc.q.Copy()
				for pb.Next() {
					q.Id = dns.Id()
					co.SetDeadline(time.Now().Add(2 * time.Second))
					if err := co.WriteMsg(q); err != nil {
						b.Error(err)
						return
					}
					r, err := co.ReadMsg()
					if err != nil || r.Rcode != bc.rcode {
						b.Errorf("got %v, %v; want %s", r, err, dns.RcodeToString[bc.rcode])
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
	if got := env.up.Total(); got != 1 {
		b.Errorf("upstream got %d queries, want 1 (the warm-up)", got)
	}
}

// serveDNSBench runs srv on a loopback UDP socket until the benchmark ends.
func serveDNSBench(b *testing.B, srv *dnsfilter.Server) string {
	b.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, nil) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return pc.LocalAddr().String()
}
