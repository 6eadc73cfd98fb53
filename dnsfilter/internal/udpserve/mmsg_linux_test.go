package udpserve

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestMmsgRoundTrip: on an IPv4 socket, a dual-stack one and an IPv6 one,
// more datagrams than a batch holds are read with their senders' addresses
// and answered to those addresses.
func TestMmsgRoundTrip(t *testing.T) {
	tests := []struct {
		name, network, listen, client string
		want                          func(netip.AddrPort) netip.AddrPort // the sender as read
	}{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1", same},
		{"dual-stack, IPv4 sender", "udp", "[::]:0", "127.0.0.1", mapped},
		{"ipv6", "udp6", "[::1]:0", "::1", same},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := net.ListenPacket(tc.network, tc.listen)
			if err != nil {
				t.Fatalf("listen: %v", err)
			}
			defer srv.Close()
			mc, err := newMmsgConn(srv.(*net.UDPConn))
			if err != nil {
				t.Fatal(err)
			}
			port := srv.LocalAddr().(*net.UDPAddr).Port
			cl := dialUDP(t, netip.AddrPortFrom(netip.MustParseAddr(tc.client), uint16(port)))
			const n = BatchSize + 8
			for i := range n {
				if _, err := cl.Write([]byte(fmt.Sprint("q", i))); err != nil {
					t.Fatal(err)
				}
			}
			from := tc.want(cl.LocalAddr().(*net.UDPAddr).AddrPort())
			in, out := newMessages(BatchSize, MaxSize), newMessages(BatchSize, 0)
			for got := 0; got < n; {
				k, err := mc.readBatch(in)
				if err != nil {
					t.Fatalf("readBatch after %d: %v", got, err)
				}
				for i, m := range in[:k] {
					if m.addr != from {
						t.Errorf("datagram %d from %v, want %v", got+i, m.addr, from)
					}
					out[i].buf = append(append(out[i].buf[:0], "a:"...), m.buf[:m.n]...)
					out[i].addr = m.addr
				}
				if w, err := mc.writeBatch(out[:k]); w != k || err != nil {
					t.Fatalf("writeBatch: %d of %d, %v", w, k, err)
				}
				got += k
			}
			var replies []string
			buf := make([]byte, MaxSize)
			cl.SetReadDeadline(time.Now().Add(5 * time.Second))
			for range n {
				k, err := cl.Read(buf)
				if err != nil {
					t.Fatalf("reply %d: %v", len(replies), err)
				}
				replies = append(replies, string(buf[:k]))
			}
			for i := range n {
				if want := fmt.Sprint("a:q", i); !slices.Contains(replies, want) {
					t.Errorf("no reply %q among %d", want, len(replies))
				}
			}
		})
	}
}

// TestMmsgWrongFamily: an IPv4 socket cannot answer an IPv6 peer; the
// batch says so for that reply and still sends the ones before it.
func TestMmsgWrongFamily(t *testing.T) {
	mc, cl := loopbackPair(t)
	out := newMessages(2, 0)
	out[0].buf, out[0].addr = []byte("ok"), cl.LocalAddr().(*net.UDPAddr).AddrPort()
	out[1].buf, out[1].addr = []byte("no"), netip.MustParseAddrPort("[2001:db8::1]:53")
	if n, err := mc.writeBatch(out); n != 1 || err != nil {
		t.Errorf("writeBatch = %d, %v; want 1, nil", n, err)
	}
	if n, err := mc.writeBatch(out[1:]); n != 0 || err == nil {
		t.Errorf("writeBatch(IPv6 peer) = %d, %v; want 0 and an error", n, err)
	}
}

// TestMmsgAllocs: reading and answering a batch allocates nothing.
func TestMmsgAllocs(t *testing.T) {
	mc, cl := loopbackPair(t)
	in, out := newMessages(BatchSize, MaxSize), newMessages(BatchSize, 0)
	q, buf := []byte("query"), make([]byte, MaxSize)
	const k = 8
	allocs := testing.AllocsPerRun(50, func() {
		for range k {
			cl.Write(q)
		}
		for got := 0; got < k; {
			n, err := mc.readBatch(in)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range in[:n] {
				out[i].buf, out[i].addr = append(out[i].buf[:0], m.buf[:m.n]...), m.addr
			}
			mc.writeBatch(out[:n])
			got += n
		}
		for range k {
			cl.Read(buf)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d, want 0", allocs, k)
	}
}

// loopbackPair is an mmsgConn on an IPv4 loopback socket and a client
// connected to it.
func loopbackPair(t *testing.T) (batchConn, *net.UDPConn) {
	t.Helper()
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	mc, err := newMmsgConn(srv.(*net.UDPConn))
	if err != nil {
		t.Fatal(err)
	}
	return mc, dialUDP(t, srv.LocalAddr().(*net.UDPAddr).AddrPort())
}

func same(a netip.AddrPort) netip.AddrPort { return a }

func mapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
}

func dialUDP(t *testing.T, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatalf("dial %v: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newMessages(n, size int) []message {
	ms := make([]message, n)
	for i := range ms {
		ms[i].buf = make([]byte, size, MaxSize)
	}
	return ms
}
