package safedial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestDialContext(t *testing.T) {
	port := int(acceptor(t, "127.0.0.2").Port())
	pol, err := policy.LoadBytes([]byte("version: 1\nnetworks:\n  allow: [127.0.0.2/32, 127.0.0.3/32]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	d := &Dialer{
		Policy: func() *policy.Policy { return pol },
		Resolver: fakeResolver{
			"ok.test":       addrs("127.0.0.2"),
			"mapped.test":   addrs("::ffff:127.0.0.2"),
			"metadata.test": addrs("169.254.169.254"),
			"mixed.test":    addrs("127.0.0.2", "10.0.0.1"),
			"self.test":     addrs("127.0.0.3"),
		},
		Self: NewSelfSet([]netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), uint16(port))}),
	}
	tests := []struct {
		host   string
		reason vocab.Reason // ReasonNone = dial succeeds
	}{
		{"ok.test", vocab.ReasonNone},
		{"mapped.test", vocab.ReasonNone},
		{"127.0.0.2", vocab.ReasonNone},
		{"metadata.test", vocab.ReasonMetadataAddress},
		{"mixed.test", vocab.ReasonPrivateAddress},
		{"10.0.0.1", vocab.ReasonPrivateAddress},
		{"self.test", vocab.ReasonSelfAddress},
	}
	for _, tc := range tests {
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(tc.host, strconv.Itoa(port)))
		if tc.reason == vocab.ReasonNone {
			if err != nil {
				t.Errorf("dial %s: %v, want success", tc.host, err)
				continue
			}
			c.Close()
			continue
		}
		var de *DeniedError
		if !errors.As(err, &de) || de.Reason != tc.reason || !errors.Is(err, ErrDenied) {
			t.Errorf("dial %s: error %v, want denied with %s", tc.host, err, tc.reason)
		}
	}
	if _, err := d.DialContext(context.Background(), "tcp", "nxdomain.test:443"); err == nil {
		t.Error("dial of an unresolvable name succeeded")
	}
}

func TestCheck(t *testing.T) {
	pol, err := policy.LoadBytes([]byte("version: 1\nnetworks:\n  allow: [127.0.0.2/32, 127.0.0.3/32]\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	self := NewSelfSet([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.3:8080")})
	tests := []struct {
		name   string
		ips    []netip.Addr
		port   uint16
		want   []string     // targets when allowed
		reason vocab.Reason // ReasonNone = allowed
		denied string       // the refused address
	}{
		{"one", addrs("127.0.0.2"), 80, []string{"127.0.0.2:80"}, vocab.ReasonNone, ""},
		{"mapped is unmapped", addrs("::ffff:127.0.0.2"), 80, []string{"127.0.0.2:80"}, vocab.ReasonNone, ""},
		{"order kept", addrs("127.0.0.3", "127.0.0.2"), 80, []string{"127.0.0.3:80", "127.0.0.2:80"}, vocab.ReasonNone, ""},
		{"self on its port", addrs("127.0.0.2", "127.0.0.3"), 8080, nil, vocab.ReasonSelfAddress, "127.0.0.3:8080"},
		{"one bad address denies all", addrs("127.0.0.2", "10.0.0.1"), 80, nil, vocab.ReasonPrivateAddress, "10.0.0.1:80"},
		{"mapped metadata", addrs("::ffff:169.254.169.254"), 80, nil, vocab.ReasonMetadataAddress, "169.254.169.254:80"},
		{"zoned link-local", addrs("fe80::1%eth0"), 80, nil, vocab.ReasonPrivateAddress, "[fe80::1]:80"},
		{"nothing to check", nil, 80, nil, vocab.ReasonResolveFailed, "invalid AddrPort"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Check(pol, self, tc.ips, tc.port)
			if tc.reason == vocab.ReasonNone {
				if err != nil {
					t.Fatalf("got error %v, want targets %v", err, tc.want)
				}
				var gs []string
				for _, ap := range got {
					gs = append(gs, ap.String())
				}
				if strings.Join(gs, " ") != strings.Join(tc.want, " ") {
					t.Errorf("got targets %v, want %v", gs, tc.want)
				}
				return
			}
			de, ok := err.(*DeniedError)
			if !ok || de.Reason != tc.reason || de.Addr.String() != tc.denied || got != nil {
				t.Errorf("got %v, %v; want nil and *DeniedError %s for %s", got, err, tc.reason, tc.denied)
			}
		})
	}
	ips := addrs("127.0.0.2", "::ffff:127.0.0.3")
	if n := testing.AllocsPerRun(100, func() { _, _ = Check(pol, self, ips, 443) }); n != 1 {
		t.Errorf("Check of an allowed answer: got %v allocations, want 1 (the targets)", n)
	}
}

// refusedAddr is a loopback address with nothing listening: dials to it
// fail at once.
// acceptor listens on ip, accepts and closes every connection until the
// test ends, and returns its address: a target that answers.
func acceptor(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func refusedAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

func TestDialFirst(t *testing.T) {
	up := acceptor(t, "127.0.0.1")
	down := refusedAddr(t)

	var mu sync.Mutex
	var dialed []string
	logDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tests := []struct {
		name    string
		dial    DialFunc
		targets []netip.AddrPort
		want    netip.AddrPort // zero = every dial fails
		dialed  []string       // with logDial
	}{
		{"first answers", logDial, []netip.AddrPort{up, down}, up, []string{up.String()}},
		{"second answers", logDial, []netip.AddrPort{down, up}, up, []string{down.String(), up.String()}},
		{"none answers", logDial, []netip.AddrPort{down, down}, netip.AddrPort{}, []string{down.String(), down.String()}},
		{"nil dial is a net.Dialer", nil, []netip.AddrPort{down, up}, up, nil},
		{"no targets", logDial, nil, netip.AddrPort{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			dialed = nil
			mu.Unlock()
			c, got, err := DialFirst(context.Background(), tc.dial, "tcp", tc.targets, 5*time.Second)
			if c != nil {
				c.Close()
			}
			if got != tc.want || (err == nil) != tc.want.IsValid() {
				t.Errorf("got %v, %v; want %v (error when zero)", got, err, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(dialed, " ") != strings.Join(tc.dialed, " ") {
				t.Errorf("dialed %v, want %v", dialed, tc.dialed)
			}
		})
	}
}

// TestDialFirstSharesTimeout: every attempt of one call runs under the
// same deadline, and once it passes no further address is tried.
func TestDialFirstSharesTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	var attempts int
	start := time.Now()
	hang := func(ctx context.Context, _, _ string) (net.Conn, error) {
		attempts++
		dl, ok := ctx.Deadline()
		if !ok || dl.Sub(start) > timeout+time.Second {
			t.Errorf("attempt %d: deadline %v (set %v), want about %v from the start", attempts, dl, ok, timeout)
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	a, b := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")
	_, _, err := DialFirst(context.Background(), hang, "tcp", []netip.AddrPort{a, b}, timeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the deadline error", err)
	}
	if attempts != 1 {
		t.Errorf("attempts after the deadline passed: got %d, want 1", attempts)
	}
}

func TestDialTimeout(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"version: 1\ntimeouts:\n  dial: 3s\n", 3 * time.Second},
		{"version: 1\n", 0}, // the policy's own default, whatever it is; never zero
	} {
		pol, err := policy.LoadBytes([]byte(tc.yaml), "t")
		if err != nil {
			t.Fatal(err)
		}
		got := DialTimeout(pol)
		if (tc.want != 0 && got != tc.want) || got <= 0 {
			t.Errorf("DialTimeout(%q) = %v, want %v (> 0)", tc.yaml, got, tc.want)
		}
	}
}
