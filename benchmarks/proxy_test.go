package benchmarks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy"
)

// proxyResolver answers every name with 127.0.0.1: the benchmarks measure
// the proxy, not DNS (see BenchmarkDNS for the resolver's cost).
type proxyResolver struct{}

func (proxyResolver) LookupNetIP(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}, nil
}

// proxyFront starts the proxy, wired as the daemon wires it (decision log
// to a discarding recorder), granting bench.example on ports, with limits
// out of the way: every request comes from one client.
func proxyFront(b *testing.B, ports ...int) string {
	b.Helper()
	ps := ""
	for i, p := range ports {
		if i > 0 {
			ps += ", "
		}
		ps += strconv.Itoa(p)
	}
	p, err := policy.LoadBytes([]byte("version: 1\nallow:\n  - {host: bench.example, ports: ["+ps+"]}\n"+
		"networks:\n  allow: [127.0.0.0/8]\n"+
		"limits:\n  client: {rps: 1000000000, burst: 1000000000}\n  host: {rps: 1000000000, burst: 1000000000}\n"+
		"  max_conns_per_client: 100000\n  max_conns: 100000\n"), "bench policy")
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{
		Policy:   func() *policy.Policy { return p },
		Resolver: proxyResolver{},
		Recorder: declog.Discard{},
		Self:     []netip.AddrPort{netip.MustParseAddrPort(ln.Addr().String())},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// BenchmarkProxyHTTP is keep-alive plain-HTTP requests/s for a 256-byte
// response, direct and through the proxy, one client connection and 8
// concurrent ones.
func BenchmarkProxyHTTP(b *testing.B) {
	body := make([]byte, 256)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "256")
		_, _ = w.Write(body)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = up.Serve(ln) }()
	b.Cleanup(func() { _ = up.Close() })
	upPort := port(ln.Addr().String())
	front := proxyFront(b, upPort)

	for _, mode := range []string{"direct", "proxy"} {
		for _, conc := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/conns=%d", mode, conc), func(b *testing.B) {
				tr := &http.Transport{MaxIdleConnsPerHost: conc, DisableCompression: true}
				target := "http://" + ln.Addr().String() + "/"
				if mode == "proxy" {
					tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: front})
					target = "http://bench.example:" + strconv.Itoa(upPort) + "/"
				}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr}
				b.ReportAllocs()
				start := time.Now()
				var n atomic.Int64
				runConcurrent(b, conc, func(buf []byte) error {
					resp, err := c.Get(target)
					if err != nil {
						return err
					}
					_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("status %d", resp.StatusCode)
					}
					n.Add(1)
					return err
				})
				b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "req/s")
			})
		}
	}
}

// runConcurrent runs b.N calls of fn spread over conc goroutines.
func runConcurrent(b *testing.B, conc int, fn func(buf []byte) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for next.Add(1) <= int64(b.N) {
				if err := fn(buf); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
}

// sinkSource is a TCP upstream for tunnel benchmarks: "u" + bytes are
// discarded and counted, "d" + 8-byte length asks it to send that many
// bytes, "e" echoes one byte.
type sinkSource struct {
	ln       net.Listener
	received atomic.Int64
}

func newSinkSource(b *testing.B) *sinkSource {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &sinkSource{ln: ln}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	b.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
			}()
		}
	}()
	return s
}

func (s *sinkSource) serve(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	switch op[0] {
	case 'u':
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				return
			}
		}
	case 'd':
		var lenb [8]byte
		if _, err := io.ReadFull(c, lenb[:]); err != nil {
			return
		}
		n, _ := strconv.ParseInt(string(lenb[:]), 16, 64)
		buf := make([]byte, 64<<10)
		for n > 0 {
			w, err := c.Write(buf[:min(int64(len(buf)), n)])
			if err != nil {
				return
			}
			n -= int64(w)
		}
	case 'e':
		_, _ = io.Copy(c, c)
	}
}

// openTunnel dials target through the proxy at front (or directly when
// front is "") and returns the connection ready for payload.
func openTunnel(front, target string) (net.Conn, *bufio.Reader, error) {
	if front == "" {
		c, err := net.Dial("tcp", target)
		if err != nil {
			return nil, nil, err
		}
		return c, bufio.NewReader(c), nil
	}
	c, err := net.Dial("tcp", front)
	if err != nil {
		return nil, nil, err
	}
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT: status %d", resp.StatusCode)
	}
	return c, br, nil
}

// BenchmarkConnectThroughput is bulk bytes through one CONNECT tunnel
// (after its first bytes were inspected), each direction, vs direct.
func BenchmarkConnectThroughput(b *testing.B) {
	ss := newSinkSource(b)
	upPort := port(ss.ln.Addr().String())
	front := proxyFront(b, upPort)
	const chunk = 256 << 10
	for _, dir := range []string{"up", "down"} {
		for _, mode := range []string{"direct", "proxy"} {
			b.Run(dir+"/"+mode, func(b *testing.B) {
				f, target := front, "bench.example:"+strconv.Itoa(upPort)
				if mode == "direct" {
					f, target = "", ss.ln.Addr().String()
				}
				c, br, err := openTunnel(f, target)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				buf := make([]byte, chunk)
				b.SetBytes(chunk)
				if dir == "up" {
					benchUpload(b, ss, c, buf)
				} else {
					benchDownload(b, c, br, buf)
				}
			})
		}
	}
}

func benchUpload(b *testing.B, ss *sinkSource, c net.Conn, buf []byte) {
	if _, err := c.Write([]byte{'u'}); err != nil {
		b.Fatal(err)
	}
	base := ss.received.Load()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	// Count only what arrived: wait (bounded) for the sink to see it all.
	want := base + int64(b.N)*int64(len(buf))
	deadline := time.Now().Add(10 * time.Second)
	for ss.received.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("sink got %d bytes, want %d", ss.received.Load()-base, want-base)
		}
		time.Sleep(time.Millisecond) // polling a counter another goroutine fills; bounded above
	}
}

func benchDownload(b *testing.B, c net.Conn, br *bufio.Reader, buf []byte) {
	total := int64(b.N) * int64(len(buf))
	if _, err := fmt.Fprintf(c, "d%08x", total); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if _, err := io.CopyBuffer(io.Discard, io.LimitReader(br, total), buf); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTunnelSetup is CONNECT tunnels per second: connect, CONNECT,
// one byte each way, close; vs a direct connection doing the same.
func BenchmarkTunnelSetup(b *testing.B) {
	ss := newSinkSource(b)
	upPort := port(ss.ln.Addr().String())
	front := proxyFront(b, upPort)
	for _, mode := range []string{"direct", "proxy"} {
		b.Run(mode, func(b *testing.B) {
			f, target := front, "bench.example:"+strconv.Itoa(upPort)
			if mode == "direct" {
				f, target = "", ss.ln.Addr().String()
			}
			b.ReportAllocs()
			start := time.Now()
			runConcurrent(b, 4, func([]byte) error {
				c, br, err := openTunnel(f, target)
				if err != nil {
					return err
				}
				defer c.Close()
				if _, err := c.Write([]byte("ex")); err != nil {
					return err
				}
				got, err := br.ReadByte()
				if err == nil && got != 'x' {
					err = errors.New("bad echo")
				}
				return err
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tunnels/s")
		})
	}
}
