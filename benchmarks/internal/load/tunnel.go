// Package load holds the benchmark's Go load generators: CONNECT tunnels
// (bulk throughput, setup rate, idle tunnels), DNS queries and LLM
// gateway streams. Every loop is bounded by a duration and a count, and
// all traffic goes to the addresses the caller passes, which the suite
// keeps on 127.0.0.0/8.
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/stats"
	"github.com/egressd/egressd/benchmarks/internal/wire"
)

// Tunnel says how to reach the tunnel target: through a proxy with
// CONNECT, or directly.
type Tunnel struct {
	// Proxy is the proxy's host:port; "" connects to Direct instead.
	Proxy string
	// Authority is the CONNECT target (name:port).
	Authority string
	// Direct is the target's ip:port, used when Proxy is "".
	Direct string
	// Hello is the TLS ClientHello record sent first (see package wire).
	Hello []byte
}

var errProxyStatus = errors.New("proxy refused the tunnel")

// Open establishes one tunnel and sends the ClientHello.
func (t Tunnel) Open(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	addr := t.Direct
	if t.Proxy != "" {
		addr = t.Proxy
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if t.Proxy != "" {
		if c, err = connect(c, t.Authority); err != nil {
			return nil, err
		}
	}
	if _, err := c.Write(t.Hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("send client hello: %w", err)
	}
	return c, nil
}

// connect sends CONNECT and reads the reply without reading past it: the
// target speaks only after the client's first command, so nothing can
// follow the reply yet, but a proxy that sent extra bytes is caught.
func connect(c net.Conn, authority string) (net.Conn, error) {
	req := "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			c.Close()
			return nil, fmt.Errorf("CONNECT reply longer than %d bytes", cap(buf))
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			status := buf[:bytes.IndexByte(buf, '\n')]
			if !bytes.HasPrefix(status, []byte("HTTP/1.")) || len(status) < 12 || string(status[9:12]) != "200" {
				c.Close()
				return nil, fmt.Errorf("%w: %q", errProxyStatus, bytes.TrimSpace(status))
			}
			if end+4 != len(buf) {
				c.Close()
				return nil, fmt.Errorf("proxy sent %d bytes after its CONNECT reply", len(buf)-end-4)
			}
			_ = c.SetReadDeadline(time.Time{})
			return c, nil
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("read CONNECT reply: %w", err)
		}
	}
}

// Echo sends n bytes and reads them back: one round trip through the
// tunnel.
func Echo(c net.Conn, payload []byte) error {
	if err := wire.WriteCmd(c, wire.OpEcho, uint64(len(payload))); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	if _, err := c.Write(payload); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echo came back altered")
	}
	return nil
}

// BulkResult is the outcome of one bulk-throughput run.
type BulkResult struct {
	Bytes   int64
	Elapsed time.Duration
}

// BytesPerSec is the aggregate throughput.
func (r BulkResult) BytesPerSec() float64 { return float64(r.Bytes) / r.Elapsed.Seconds() }

// Bulk opens n tunnels, asks each for up to maxBytes, and reads for dur
// (whichever ends first); the result counts bytes received by all
// tunnels between the first byte and the end.
func Bulk(ctx context.Context, t Tunnel, n int, dur time.Duration, maxBytes uint64) (BulkResult, error) {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := t.Open(ctx)
		if err != nil {
			return BulkResult{}, err
		}
		conns = append(conns, c)
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	deadline := start.Add(dur)
	for i, c := range conns {
		wg.Go(func() { errs[i] = drain(c, deadline, maxBytes, &total) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return BulkResult{}, err
	}
	return BulkResult{Bytes: total.Load(), Elapsed: elapsed}, nil
}

func drain(c net.Conn, deadline time.Time, maxBytes uint64, total *atomic.Int64) error {
	if err := wire.WriteCmd(c, wire.OpBulk, maxBytes); err != nil {
		return fmt.Errorf("send bulk: %w", err)
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, 256<<10)
	var got uint64
	for got < maxBytes {
		m, err := c.Read(buf)
		got += uint64(m)
		total.Add(int64(m))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || (errors.Is(err, io.EOF) && got == maxBytes) {
				return nil
			}
			return fmt.Errorf("read bulk after %d bytes: %w", got, err)
		}
	}
	return nil
}

// SetupResult is the outcome of one new-tunnels run.
type SetupResult struct {
	Tunnels int
	Errors  int
	Elapsed time.Duration
	Lat     *stats.Latencies // open + one echo round trip, per tunnel
	// FirstErr is one of the errors, for the report.
	FirstErr error
}

// Setup runs workers loops of open, one 32-byte echo, close, until dur
// has passed or max tunnels were started.
func Setup(ctx context.Context, t Tunnel, workers int, dur time.Duration, max int) SetupResult {
	end := time.Now().Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var started atomic.Int64
	lats := make([]*stats.Latencies, workers)
	errs := make([]int, workers)
	done := make([]int, workers)
	firstErr := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	payload := bytes.Repeat([]byte{'x'}, 32)
	for w := range workers {
		lats[w] = stats.NewLatencies(max)
		wg.Go(func() {
			for time.Now().Before(end) && started.Add(1) <= int64(max) {
				t0 := time.Now()
				if err := oneTunnel(ctx, t, payload); err != nil {
					// A dial that fails because the run's deadline passed
					// can return before ctx reports it: judge by the clock.
					if time.Now().Before(end) {
						errs[w]++
						if firstErr[w] == nil {
							firstErr[w] = err
						}
					}
					continue
				}
				lats[w].Add(time.Since(t0))
				done[w]++
			}
		})
	}
	wg.Wait()
	res := SetupResult{Elapsed: time.Since(start), Lat: stats.NewLatencies(max)}
	for w := range workers {
		res.Lat.Merge(lats[w])
		res.Errors += errs[w]
		res.Tunnels += done[w]
		if res.FirstErr == nil {
			res.FirstErr = firstErr[w]
		}
	}
	return res
}

func oneTunnel(ctx context.Context, t Tunnel, payload []byte) error {
	c, err := t.Open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return Echo(c, payload)
}

// OpenIdle opens n tunnels, proves each carries one round trip, and
// returns them open. The caller closes them.
func OpenIdle(ctx context.Context, t Tunnel, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	payload := []byte("idle-tunnel-ping")
	for range n {
		c, err := t.Open(ctx)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err = Echo(c, payload); err != nil {
				c.Close()
			}
			_ = c.SetDeadline(time.Time{})
		}
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("idle tunnel %d of %d: %w", len(conns)+1, n, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}
