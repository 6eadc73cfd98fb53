// Package udpserve owns the UDP side of egressd's DNS server: a reader
// goroutine that owns the socket, reads datagrams in batches (recvmmsg on
// Linux), hands each to a Handler, and writes the replies as one batch
// (sendmmsg), from the address each query was sent to. It knows bytes and
// addresses only; what a reply says is the Handler's.
package udpserve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// BatchSize is how many datagrams one read or write system call moves at
// most.
const BatchSize = 32

// MaxSize is the read buffer per datagram, and the largest reply: the DNS
// flag day 2020 value, which avoids fragmentation. A longer datagram is cut
// there, as miekg's server cuts it at its UDPSize.
const MaxSize = 1232

// Handler answers the datagrams one reader reads. Every reader has its own
// (Config.Handler is called once per reader), so its state needs no lock.
type Handler interface {
	// Datagram answers pkt, read from from, valid only during the call.
	// It queues at most one reply on b.
	Datagram(b *Batch, pkt []byte, from netip.AddrPort, now time.Time)
	// Sent runs once the replies of the batch are written: work that must
	// not delay a reply (a decision line) waits for it.
	Sent()
}

// Config wires a Server.
type Config struct {
	Conn    net.PacketConn
	Handler func() Handler
	// Clock is read once per batch; nil means time.Now.
	Clock func() time.Time
	// Logger gets replies that could not be sent; nil means slog.Default().
	Logger *slog.Logger
}

// Server is the UDP side of one Serve.
type Server struct {
	cfg     Config
	pktinfo bool // datagrams carry their destination, replies their source
	readers sync.WaitGroup
}

// Readers is how many goroutines read the socket: one. Go lets one read
// wait on a socket at a time, so a second reader only waits for the
// first's lock and is woken (a thread wake-up) for every batch, which
// cost more than the overlap bought: on the benchmark (16 queries in
// flight, 2 CPUs) one reader answered more queries a second, with a
// sixth of the futex calls and 40% fewer context switches. The reader
// only ever answers from memory; a query that waits for the resolver
// leaves it at once (the Handler's business).
func Readers() int { return 1 }

// Serve starts the readers. A reader whose socket fails reports on errc
// (which must have room for Readers() errors) and stops.
func Serve(ctx context.Context, cfg Config, errc chan<- error) *Server {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg}
	s.pktinfo = wantPktinfo(cfg.Conn)
	for range Readers() {
		r := s.newReader(cfg.Handler())
		s.readers.Go(func() {
			if err := r.run(ctx); err != nil {
				errc <- err
			}
		})
	}
	return s
}

// Stop ends the readers and waits for them. The socket stays open, for
// replies still on their way (Writer).
func (s *Server) Stop() {
	s.cfg.Conn.SetReadDeadline(time.Unix(1, 0))
	s.readers.Wait()
}

// reader is one reader goroutine's buffers, reused across batches so a
// datagram answered inline allocates nothing.
type reader struct {
	s    *Server
	h    Handler
	conn batchConn
	in   []message
	b    Batch
}

func (s *Server) newReader(h Handler) *reader {
	r := &reader{s: s, h: h, conn: newBatchConn(s.cfg.Conn), in: make([]message, BatchSize)}
	r.b = newBatch(s.cfg.Conn, s.pktinfo)
	for i := range r.in {
		r.in[i].buf = make([]byte, MaxSize)
		if s.pktinfo {
			r.in[i].oob = make([]byte, oobSize)
		}
	}
	return r
}

// run reads and answers batches until ctx ends (nil) or the socket fails.
func (r *reader) run(ctx context.Context) error {
	for {
		n, err := r.conn.readBatch(r.in)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return err
		}
		// One reading of the clock for the batch: every query in it
		// arrived by now, and the clock is not free (a VM's can cost
		// 100 ns).
		now := r.s.cfg.Clock()
		for i := range r.in[:n] {
			m := &r.in[i]
			r.b.dst = netip.Addr{}
			if r.s.pktinfo {
				r.b.dst = pktinfoDst(m.oob[:m.nn])
			}
			r.h.Datagram(&r.b, m.buf[:m.n], m.addr, now)
		}
		r.flush()
		r.h.Sent()
	}
}

// flush writes the batch's replies. A reply that cannot be sent (the
// client's address unreachable, say) is skipped, as miekg drops it.
func (r *reader) flush() {
	ms := r.b.out[:r.b.n]
	for len(ms) > 0 {
		n, err := r.conn.writeBatch(ms)
		n = max(n, 0)
		if err != nil {
			r.s.cfg.Logger.Debug("dns reply not written", "client", ms[n].addr, "err", err)
			n++
		}
		ms = ms[min(n, len(ms)):]
	}
	r.b.n = 0
}
