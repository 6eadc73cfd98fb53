package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/proxy/internal/sockio"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/declog"
)

// relayModes are the two ways a tunnel relays: in the kernel (both ends raw
// TCP sockets: splice, TCP_INFO for idleness) and through buffers, which
// egressd falls back to when a dialed connection is not a *net.TCPConn
// (here: a Dial hook that wraps it).
var relayModes = []struct {
	name   string
	kernel bool
	mod    func(*Config)
}{
	{"kernel", sockio.Kernel, nil},
	{"buffered", false, func(c *Config) { c.Dial = wrappedDial }},
}

// opaqueConn hides the *net.TCPConn under it, half-close included.
type opaqueConn struct{ net.Conn }

func (c opaqueConn) CloseWrite() error { return closeWrite(c.Conn) }
func (c opaqueConn) CloseRead() error  { return closeRead(c.Conn) }

func wrappedDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return opaqueConn{c}, nil
}

// openTunnel returns the tunnel egressd holds for the one CONNECT open.
func (e *env) openTunnel(t *testing.T) *tunnel {
	t.Helper()
	var tuns []*tunnel
	for _, u := range e.srv.reg.collect(func(destKey, *upConn) bool { return false }) {
		if u.tun != nil {
			tuns = append(tuns, u.tun)
		}
	}
	if len(tuns) != 1 {
		t.Fatalf("open tunnels: got %d, want 1", len(tuns))
	}
	return tuns[0]
}

// pattern is n bytes that are not TLS (the tunnel is not inspected) and
// whose order shows.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + i%23)
	}
	return p
}

// echoBulk sends n bytes through an echo tunnel while reading them back,
// and checks they return intact.
func echoBulk(t *testing.T, c net.Conn, br *bufio.Reader, n int) {
	t.Helper()
	want := pattern(n)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("reading %d echoed bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("writing %d bytes: %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bytes came back altered", n)
	}
}

// warmTunnel opens an echo tunnel and moves bulk bytes both ways; with a
// kernel relay both directions are spliced afterwards.
func warmTunnel(t *testing.T, f *fixture, kernel bool, bulk int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := f.connect(f.ep("granted.test"))
	echoBulk(t, c, br, bulk)
	want := int32(0)
	if kernel && bulk >= spliceAfter {
		want = 2
	}
	if got := f.openTunnel(t).spliced.Load(); got != want {
		t.Fatalf("spliced directions after %d bytes: got %d, want %d", bulk, got, want)
	}
	return c, br
}

func closeEntry(t *testing.T, f *fixture) declog.Entry {
	t.Helper()
	return f.rec.WaitFor(t, waitLimit, "tunnel close", func(e declog.Entry) bool {
		return e.Event == vocab.EventClose && e.Proto == vocab.ProtoConnect
	})
}

// TestTunnelByteCounts: the close entry counts every byte each way,
// whether it went through a buffer or was spliced.
func TestTunnelByteCounts(t *testing.T) {
	for _, m := range relayModes {
		for _, n := range []int{5, spliceAfter - 1, spliceAfter + 1, 3 << 20} {
			t.Run(m.name+"/"+strconv.Itoa(n), func(t *testing.T) {
				f := newFixture(t, fixOpts{mod: m.mod})
				c, br := warmTunnel(t, f, m.kernel, n)
				echo(t, c, br, "tail")
				c.Close()
				cl := closeEntry(t, f)
				if want := int64(n + 4); cl.BytesUp != want || cl.BytesDn != want || cl.Status != http.StatusOK {
					t.Errorf("close entry: got up %d down %d status %d, want %d each way and 200",
						cl.BytesUp, cl.BytesDn, cl.Status, want)
				}
			})
		}
	}
}

// TestTunnelIdle: a tunnel, spliced or not, is cut after timeouts.idle
// without traffic, and traffic keeps it open past it.
func TestTunnelIdle(t *testing.T) {
	for _, m := range relayModes {
		for _, bulk := range []int{4, 256 << 10} {
			t.Run(m.name+"/"+strconv.Itoa(bulk), func(t *testing.T) {
				f := newFixture(t, fixOpts{timeouts: "  header: 2s\n  idle: 300ms\n", mod: m.mod})
				c, br := warmTunnel(t, f, m.kernel, bulk)
				deadline := time.Now().Add(900 * time.Millisecond)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for time.Now().Before(deadline) {
					echo(t, c, br, "x")
					<-tick.C
				}
				echo(t, c, br, "still open")
				start := time.Now()
				expectClosed(t, c, br)
				if took := time.Since(start); took < 250*time.Millisecond {
					t.Errorf("idle tunnel closed after %v, want about 300ms", took)
				}
				cl := closeEntry(t, f)
				if cl.Reason != vocab.ReasonNone || cl.BytesUp != cl.BytesDn || cl.BytesUp < int64(bulk) {
					t.Errorf("close entry: got %+v, want no reason and the same count each way", cl)
				}
			})
		}
	}
}

// TestRevokeSplicedTunnel: Revoke cuts a tunnel however it relays, logs
// the revocation before the close, and the close carries the bytes moved.
func TestRevokeSplicedTunnel(t *testing.T) {
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, fixOpts{mod: m.mod})
			c, br := warmTunnel(t, f, m.kernel, 256<<10)
			f.pol.Store(mustPolicy(t, "version: 1\nallow:\n  - {host: other.test, ports: "+ports(f.echo)+"}\n"+
				"networks:\n  allow: [127.0.0.0/8]\n"))
			f.srv.Revoke()
			expectClosed(t, c, br)
			cl := closeEntry(t, f)
			if cl.Reason != vocab.ReasonRevoked || cl.BytesUp != 256<<10 || cl.BytesDn != 256<<10 {
				t.Errorf("close entry: got %+v, want reason revoked and 262144 bytes each way", cl)
			}
			var order []vocab.Event
			for _, e := range f.rec.All() {
				if e.Reason == vocab.ReasonRevoked {
					order = append(order, e.Event)
				}
			}
			if len(order) != 2 || order[0] != vocab.EventDecision || order[1] != vocab.EventClose {
				t.Errorf("revoked entries: got %v, want the decision, then the close", order)
			}
			f.waitNoClientConns(t)
		})
	}
}

// recorder is a TCP upstream that keeps every byte it receives.
type recorder struct {
	port int
	got  chan []byte // what one connection sent, once it closed
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{got: make(chan []byte, 4)}
	r.port = tcpServer(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		r.got <- b
	})
	return r
}

// TestTunnelEarlyBytes: bytes the client sent right behind its CONNECT,
// which net/http read along with the head, reach the upstream first, whole
// and in order, after the SNI check; a mismatching SNI among them is still
// refused.
func TestTunnelEarlyBytes(t *testing.T) {
	rec := newRecorder(t)
	f := newFixture(t, fixOpts{extraAllow: func(*fixture) string {
		return "  - {host: rec.test, ports: [" + strconv.Itoa(rec.port) + "]}\n"
	}})
	f.res.set("rec.test", "127.0.0.1")
	target := "rec.test:" + strconv.Itoa(rec.port)
	hello := testutil.ClientHello(t, "rec.test")
	long := pattern(48 << 10) // far past net/http's 4 KiB read buffer
	cases := []struct {
		name         string
		early, later []byte
		denied       vocab.Reason
	}{
		{"hello and data", append(append([]byte{}, hello...), "after"...), nil, vocab.ReasonNone},
		{"half a hello", hello[:len(hello)/2], append(append([]byte{}, hello[len(hello)/2:]...), "after"...), vocab.ReasonNone},
		{"hello and a long tail", append(append([]byte{}, hello...), long...), []byte("end"), vocab.ReasonNone},
		{"not tls", []byte("SSH-2.0-test\r\n"), long, vocab.ReasonNone},
		{"sni mismatch", append(append([]byte{}, testutil.ClientHello(t, "evil.test")...), "after"...), nil, vocab.ReasonSNIMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.rec.Reset()
			c := f.dial()
			if _, err := c.Write(append([]byte(connectReq(target)), tc.early...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT: got %v %v, want 200", resp, err)
			}
			if len(tc.later) > 0 {
				_, _ = c.Write(tc.later) // fails once a denial closed the tunnel
			}
			_ = c.(*net.TCPConn).CloseWrite()
			want := append(append([]byte{}, tc.early...), tc.later...)
			if tc.denied != vocab.ReasonNone {
				want = nil
				decisionFor(t, f.rec, "rec.test", tc.denied)
			}
			select {
			case got := <-rec.got:
				if !bytes.Equal(got, want) {
					t.Errorf("upstream received %d bytes, want the %d sent (or none if denied), in order", len(got), len(want))
				}
			case <-time.After(waitLimit):
				t.Fatal("upstream connection never closed")
			}
			cl := closeEntry(t, f)
			if cl.BytesUp != int64(len(want)) {
				t.Errorf("close entry: %d bytes up, want %d", cl.BytesUp, len(want))
			}
		})
	}
}

// TestSplicedClientThatStopsReadingIsCut: a client that reads for a while
// (the download is spliced by then) and then stops, while it keeps
// sending so the tunnel is never idle, is cut once bytes for it have
// waited timeouts.idle without it acknowledging any.
func TestSplicedClientThatStopsReadingIsCut(t *testing.T) {
	fire := firehose(t)
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, fixOpts{
				timeouts:   "  header: 2s\n  idle: 300ms\n",
				extraAllow: func(*fixture) string { return "  - {host: fire.test, ports: [" + strconv.Itoa(fire) + "]}\n" },
				mod:        m.mod,
			})
			f.res.set("fire.test", "127.0.0.1")
			c, br := f.connect("fire.test:" + strconv.Itoa(fire))
			if _, err := io.CopyN(io.Discard, br, 1<<20); err != nil {
				t.Fatalf("reading the first MiB: %v", err)
			}
			if got, want := f.openTunnel(t).spliced.Load() > 0, m.kernel; got != want {
				t.Fatalf("download spliced: got %v, want %v", got, want)
			}
			defer keepWriting(c)()
			cl := closeEntry(t, f)
			if cl.BytesDn >= bigBody || cl.BytesDn < 1<<20 {
				t.Errorf("close entry: %d bytes down, want between the MiB read and the %d offered", cl.BytesDn, bigBody)
			}
			f.waitNoClientConns(t)
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestRelayChunkAllocs: relaying a chunk through a buffer (a read, the
// write to the client, the buffer given back) allocates nothing, in either
// relay mode.
func TestRelayChunkAllocs(t *testing.T) {
	for _, m := range relayModes {
		t.Run(m.name, func(t *testing.T) {
			srcPeer, src := tcpPair(t)
			dst, dstPeer := tcpPair(t)
			tn := &tunnel{client: dst, kernel: m.kernel, u: &upConn{s: &Server{epoch: time.Now()}, idle: time.Minute}}
			var r sockio.Reader
			var rc syscall.RawConn
			if m.kernel {
				var err error
				if rc, err = src.SyscallConn(); err != nil {
					t.Fatal(err)
				}
			}
			r.Init(src, rc)
			one, got := []byte{'x'}, make([]byte, 1)
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := srcPeer.Write(one); err != nil {
					t.Fatal(err)
				}
				p, err := r.Read()
				if err != nil || len(p) != 1 {
					t.Fatalf("read: got %q %v, want one byte", p, err)
				}
				if _, err := tn.writeClient(p); err != nil {
					t.Fatal(err)
				}
				r.Release()
				if _, err := io.ReadFull(dstPeer, got); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("allocations per relayed chunk: got %v, want 0", allocs)
			}
		})
	}
}

// hijackRecorder is a ResponseWriter whose Hijack hands over conn with
// buffered already read past the request head.
type hijackRecorder struct {
	http.ResponseWriter
	conn     net.Conn
	buffered string
}

func (h hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	br := bufio.NewReaderSize(io.MultiReader(strings.NewReader(h.buffered), h.conn), 4096)
	if h.buffered != "" {
		if _, err := br.Peek(len(h.buffered)); err != nil {
			return nil, nil, err
		}
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriter(h.conn)), nil
}

// TestHijackEarlyBytes: hijack returns exactly the bytes buffered past the
// CONNECT head, and no slice at all when there are none (an empty one
// would pin net/http's read buffer for the tunnel's life).
func TestHijackEarlyBytes(t *testing.T) {
	s := &Server{}
	for _, buffered := range []string{"", "\x16\x03\x01 hello"} {
		c, _ := tcpPair(t)
		conn, early, ok := s.hijack(hijackRecorder{conn: c, buffered: buffered}, &request{}, nil)
		if !ok || conn != c {
			t.Fatalf("hijack: got %v %v, want the connection", conn, ok)
		}
		if string(early) != buffered || (buffered == "") != (early == nil) {
			t.Errorf("early bytes: got %q (nil %v), want %q", early, early == nil, buffered)
		}
	}
}
