// Package udpserve owns the UDP side of egressd's DNS server: a few reader
// goroutines that own the socket, read datagrams in batches (recvmmsg on
// Linux), hand each to a Handler, and write the replies as one batch
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

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
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
	Datagram(b *Batch, pkt []byte, from net.Addr, now time.Time)
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
	conn    batchConn
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
	s.conn, s.pktinfo = newBatchConn(cfg.Conn)
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

// batchConn moves datagrams in batches. *ipv4.PacketConn and
// *ipv6.PacketConn implement it; plainConn adapts any net.PacketConn one
// datagram at a time.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchConn returns pc as a batchConn and whether its datagrams come
// with their destination address (see pktinfo).
func newBatchConn(pc net.PacketConn) (batchConn, bool) {
	c, ok := pc.(*net.UDPConn)
	if !ok {
		return plainConn{pc}, false
	}
	a, _ := c.LocalAddr().(*net.UDPAddr)
	// Only a socket bound to every address needs the destination of each
	// datagram: one bound to a single address (compose binds egressd's)
	// always answers from it, and the control messages would cost every
	// datagram a parse in the kernel and here.
	pktinfo := a != nil && a.IP.IsUnspecified() && enablePktinfo(c)
	if a != nil && a.IP.To4() == nil {
		return ipv6.NewPacketConn(c), pktinfo
	}
	return ipv4.NewPacketConn(c), pktinfo
}

type plainConn struct{ pc net.PacketConn }

func (c plainConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	n, from, err := c.pc.ReadFrom(ms[0].Buffers[0])
	if err != nil {
		return 0, err
	}
	ms[0].N, ms[0].Addr = n, from
	return 1, nil
}

func (c plainConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for i, m := range ms {
		if _, err := c.pc.WriteTo(m.Buffers[0], m.Addr); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}

// reader is one reader goroutine's buffers, reused across batches so a
// datagram answered inline allocates nothing.
type reader struct {
	s  *Server
	h  Handler
	in []ipv4.Message
	b  Batch
}

func (s *Server) newReader(h Handler) *reader {
	r := &reader{s: s, h: h, in: make([]ipv4.Message, BatchSize)}
	r.b = newBatch(s.cfg.Conn, s.pktinfo)
	for i := range r.in {
		r.in[i].Buffers = [][]byte{make([]byte, MaxSize)}
		if s.pktinfo {
			r.in[i].OOB = make([]byte, oobSize)
		}
	}
	return r
}

// run reads and answers batches until ctx ends (nil) or the socket fails.
func (r *reader) run(ctx context.Context) error {
	for {
		n, err := r.s.conn.ReadBatch(r.in, 0)
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
				r.b.dst = pktinfoDst(m.OOB[:m.NN])
			}
			r.h.Datagram(&r.b, m.Buffers[0][:m.N], m.Addr, now)
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
		n, err := r.s.conn.WriteBatch(ms, 0)
		n = max(n, 0)
		if err != nil {
			r.s.cfg.Logger.Debug("dns reply not written", "client", ms[n].Addr, "err", err)
			n++
		}
		ms = ms[min(n, len(ms)):]
	}
	r.b.n = 0
}
