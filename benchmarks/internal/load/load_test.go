package load

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/ceiling"
	"github.com/egressd/egressd/benchmarks/internal/origin"
	"github.com/egressd/egressd/benchmarks/internal/wire"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// tunnels starts the tunnel target and the hand-written CONNECT proxy on
// loopback and returns a direct and a proxied Tunnel to the target.
func tunnels(t *testing.T) (direct, proxied Tunnel) {
	t.Helper()
	target, err := origin.StartTunnelTarget("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ceiling.Serve(l, ceiling.Hosts{"t.bench.test": "127.0.0.1"}) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("ceiling.Serve: %v", err)
		}
	})
	hello, err := wire.ClientHello("t.bench.test")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(target.Addr)
	direct = Tunnel{Direct: target.Addr, Hello: hello}
	proxied = Tunnel{Proxy: l.Addr().String(), Authority: "t.bench.test:" + port, Hello: hello}
	return direct, proxied
}

func TestTunnelLoops(t *testing.T) {
	direct, proxied := tunnels(t)
	ctx := context.Background()
	for name, tun := range map[string]Tunnel{"direct": direct, "proxied": proxied} {
		t.Run(name, func(t *testing.T) {
			const want = 3 << 20
			r, err := Bulk(ctx, tun, 2, 10*time.Second, want/2)
			if err != nil {
				t.Fatalf("Bulk: %v", err)
			}
			if r.Bytes != want {
				t.Errorf("Bulk read %d bytes, want %d", r.Bytes, want)
			}
			s := Setup(ctx, tun, 4, 10*time.Second, 40)
			if s.Tunnels != 40 || s.Errors != 0 {
				t.Errorf("Setup = %d tunnels, %d errors, want 40 and 0", s.Tunnels, s.Errors)
			}
			conns, err := OpenIdle(ctx, tun, 20)
			if err != nil {
				t.Fatalf("OpenIdle: %v", err)
			}
			for _, c := range conns {
				c.Close()
			}
			if len(conns) != 20 {
				t.Errorf("OpenIdle opened %d, want 20", len(conns))
			}
		})
	}
}

func TestTunnelRefused(t *testing.T) {
	_, proxied := tunnels(t)
	proxied.Authority = "unknown.bench.test:443"
	_, err := proxied.Open(context.Background())
	if !errors.Is(err, errProxyStatus) || !strings.Contains(err.Error(), "502") {
		t.Errorf("Open(unknown host) error = %v, want errProxyStatus with 502", err)
	}
}

func TestChat(t *testing.T) {
	p, err := origin.StartProvider("127.0.0.1:0", "real-key")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := Chat{URL: "http://" + p.Addr + "/v1/chat/completions", Token: "real-key", Model: "m", Client: NewChatClient()}
	ctx := context.Background()
	lat, err := c.TTFB(ctx, 5, 10*time.Second)
	if err != nil || lat.Len() != 5 {
		t.Fatalf("TTFB = %v samples, %v; want 5, nil", lat, err)
	}
	s, err := c.Stream(ctx, 1000, 10*time.Second)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if s.Events != 1000 || s.Bytes < 1000*100 {
		t.Errorf("Stream = %+v, want 1000 events of over 100 bytes", s)
	}
	c.Token = "agent-token"
	if _, err := c.TTFB(ctx, 1, 10*time.Second); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("TTFB with the wrong key: error = %v, want a 401", err)
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 1s test\nBENCHJSON {\"requests\":100,\"duration_us\":500000,\"status_errors\":2,\"p50_us\":90,\"p99_us\":400,\"max_us\":900}\n"
	r, err := ParseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS() != 200 || r.Errors() != 2 || r.P99US != 400 {
		t.Errorf("ParseWrk = %+v (RPS %v, errors %d), want RPS 200, 2 errors, p99 400", r, r.RPS(), r.Errors())
	}
	if _, err := ParseWrk([]byte("no summary\n")); err == nil {
		t.Error("ParseWrk(no summary) succeeded, want an error")
	}
}

func TestDNSLoops(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone("ok.bench.test. 300 IN A 127.0.0.1"))
	ctx := context.Background()
	tests := []struct {
		name       string
		q          DNSQueries
		wantErrors bool
	}{
		{name: "answered", q: DNSQueries{Names: []string{"ok.bench.test"}, Answered: true}},
		{name: "denied", q: DNSQueries{Names: []string{"no.bench.test"}}},
		{name: "denial expected, answer got", q: DNSQueries{Names: []string{"ok.bench.test"}}, wantErrors: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.Server = up.Addr
			if err := tt.q.Pack(); err != nil {
				t.Fatal(err)
			}
			peak := DNSPeak(ctx, &tt.q, 4, 10*time.Second, 200)
			fixed := DNSFixedRate(ctx, &tt.q, 2, 1000, 10*time.Second, 50)
			if tt.wantErrors {
				if peak.Errors == 0 || peak.FirstErr == nil {
					t.Errorf("DNSPeak = %d errors (%v), want errors", peak.Errors, peak.FirstErr)
				}
				return
			}
			if peak.Queries != 200 || peak.Errors != 0 {
				t.Errorf("DNSPeak = %d queries, %d errors (%v), want 200 and 0", peak.Queries, peak.Errors, peak.FirstErr)
			}
			if fixed.Queries != 50 || fixed.Errors != 0 || fixed.Lat.Len() != 50 {
				t.Errorf("DNSFixedRate = %d queries, %d errors, want 50 and 0", fixed.Queries, fixed.Errors)
			}
			// 50 queries at 1000/s take at least ~49 ms: the pacing works.
			if fixed.Elapsed < 40*time.Millisecond {
				t.Errorf("DNSFixedRate took %v, want at least 40ms at 1000 q/s", fixed.Elapsed)
			}
		})
	}
}
