package safedial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"

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
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
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
		reason policy.Reason // ReasonNone = dial succeeds
	}{
		{"ok.test", policy.ReasonNone},
		{"mapped.test", policy.ReasonNone},
		{"127.0.0.2", policy.ReasonNone},
		{"metadata.test", policy.ReasonMetadataAddress},
		{"mixed.test", policy.ReasonPrivateAddress},
		{"10.0.0.1", policy.ReasonPrivateAddress},
		{"self.test", policy.ReasonSelfAddress},
	}
	for _, tc := range tests {
		c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(tc.host, strconv.Itoa(port)))
		if tc.reason == policy.ReasonNone {
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
