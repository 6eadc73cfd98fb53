package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// DNSQueries is a fixed set of A queries sent round robin, and the answer
// each must get: Answered (NOERROR with at least one answer) for granted
// names, otherwise a refusal (NXDOMAIN or REFUSED).
type DNSQueries struct {
	Server   string // ip:port
	Names    []string
	Answered bool
	packed   [][]byte
}

// Pack builds the wire form of every query once, so the loops only patch
// the ID.
func (q *DNSQueries) Pack() error {
	q.packed = q.packed[:0]
	for _, n := range q.Names {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(n), dns.TypeA)
		m.RecursionDesired = true
		b, err := m.Pack()
		if err != nil {
			return fmt.Errorf("pack query for %s: %w", n, err)
		}
		q.packed = append(q.packed, b)
	}
	if len(q.packed) == 0 {
		return errors.New("no names to query")
	}
	return nil
}

var errBadAnswer = errors.New("unexpected DNS answer")

// Check validates one response to the query with this id.
func (q *DNSQueries) Check(resp []byte, id uint16) error {
	if len(resp) < 12 {
		return fmt.Errorf("%w: %d bytes", errBadAnswer, len(resp))
	}
	if binary.BigEndian.Uint16(resp) != id {
		return fmt.Errorf("%w: id mismatch", errBadAnswer)
	}
	rcode := int(resp[3] & 0x0f)
	ancount := binary.BigEndian.Uint16(resp[6:])
	if q.Answered && (rcode != dns.RcodeSuccess || ancount == 0) {
		return fmt.Errorf("%w: rcode %s with %d answers, want an answer", errBadAnswer, dns.RcodeToString[rcode], ancount)
	}
	if !q.Answered && rcode != dns.RcodeNameError && rcode != dns.RcodeRefused {
		return fmt.Errorf("%w: rcode %s, want NXDOMAIN or REFUSED", errBadAnswer, dns.RcodeToString[rcode])
	}
	return nil
}

// DNSResult is the outcome of one DNS run.
type DNSResult struct {
	Queries  int
	Errors   int
	Elapsed  time.Duration
	Lat      *stats.Latencies
	FirstErr error
}

// QPS is answered queries per second.
func (r DNSResult) QPS() float64 { return float64(r.Queries) / r.Elapsed.Seconds() }

// DNSFixedRate sends rate queries per second in total from workers
// sockets, each waiting for its answer before its next scheduled send,
// for dur or until max queries were sent.
func DNSFixedRate(ctx context.Context, q *DNSQueries, workers int, rate float64, dur time.Duration, max int) DNSResult {
	interval := time.Duration(float64(time.Second) * float64(workers) / rate)
	return dnsRun(ctx, q, workers, interval, dur, max)
}

// DNSPeak keeps workers queries in flight (closed loop) for dur or until
// max queries were sent.
func DNSPeak(ctx context.Context, q *DNSQueries, workers int, dur time.Duration, max int) DNSResult {
	return dnsRun(ctx, q, workers, 0, dur, max)
}

func dnsRun(ctx context.Context, q *DNSQueries, workers int, interval, dur time.Duration, max int) DNSResult {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var sent atomic.Int64
	res := make([]DNSResult, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		res[w].Lat = stats.NewLatencies(max)
		wg.Go(func() { dnsWorker(ctx, q, w, interval, &sent, int64(max), &res[w]) })
	}
	wg.Wait()
	out := DNSResult{Elapsed: time.Since(start), Lat: stats.NewLatencies(max)}
	for _, r := range res {
		out.Queries += r.Queries
		out.Errors += r.Errors
		out.Lat.Merge(r.Lat)
		if out.FirstErr == nil {
			out.FirstErr = r.FirstErr
		}
	}
	return out
}

func dnsWorker(ctx context.Context, q *DNSQueries, w int, interval time.Duration, sent *atomic.Int64, max int64, r *DNSResult) {
	c, err := net.Dial("udp", q.Server)
	if err != nil {
		r.Errors++
		r.FirstErr = err
		return
	}
	defer c.Close()
	buf := make([]byte, 1500)
	msgs := make([][]byte, len(q.packed)) // own copies: the ID is patched in place
	for i, m := range q.packed {
		msgs[i] = append([]byte(nil), m...)
	}
	next := time.Now().Add(time.Duration(w) * interval / 8) // spread the workers' phases
	for i := w; ctx.Err() == nil && sent.Add(1) <= max; i++ {
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			next = next.Add(interval)
		}
		msg := msgs[i%len(msgs)]
		id := uint16(i)
		binary.BigEndian.PutUint16(msg, id)
		t0 := time.Now()
		err := exchange(c, msg, buf, id, q)
		if err != nil {
			r.Errors++
			if r.FirstErr == nil {
				r.FirstErr = err
			}
			continue
		}
		r.Lat.Add(time.Since(t0))
		r.Queries++
	}
}

// exchange sends one query and reads until its answer arrives; a late
// answer to an earlier query that timed out is skipped.
func exchange(c net.Conn, msg, buf []byte, id uint16, q *DNSQueries) error {
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send query: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) != id {
			continue
		}
		return q.Check(buf[:n], id)
	}
}
