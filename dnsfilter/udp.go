package dnsfilter

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/egressd/egressd/declog"
)

// UDP is served by a few reader goroutines that own the socket, rather
// than by miekg's goroutine per packet: each reads a batch of datagrams
// (recvmmsg on Linux), answers what it can inline and writes the replies
// as one batch (sendmmsg). Only a query that waits for the resolver leaves
// the reader, on a goroutine of its own. TCP stays on miekg.
const (
	// batchSize is how many datagrams one read or write system call
	// moves at most.
	batchSize = 32
	// maxWaiting bounds queries waiting for the resolver at once; past
	// it a query is answered SERVFAIL at once, as the resolver does when
	// too many distinct names are in flight.
	maxWaiting = 4096
	// maxClientNames bounds each reader's cache of client log spellings.
	maxClientNames = 256
)

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
	pktinfo := enablePktinfo(c)
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
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

// udpServer is the UDP side of one Serve.
type udpServer struct {
	s       *Server
	pc      net.PacketConn
	conn    batchConn
	pktinfo bool // datagrams carry their destination, replies their source
	readers sync.WaitGroup
	waiting sync.WaitGroup // queries handed to their own goroutine
	slots   chan struct{}  // one per waiting query, up to maxWaiting
}

// serveUDP starts the readers on pc. A reader whose socket fails reports
// on errc (which has room for every reader) and stops.
func (s *Server) serveUDP(ctx context.Context, pc net.PacketConn, errc chan<- error) *udpServer {
	u := &udpServer{s: s, pc: pc, slots: make(chan struct{}, maxWaiting)}
	u.conn, u.pktinfo = newBatchConn(pc)
	for range udpReaders() {
		r := u.newReader()
		u.readers.Go(func() {
			if err := r.run(ctx); err != nil {
				errc <- err
			}
		})
	}
	return u
}

// udpReaders is how many goroutines read the socket: one per CPU, so
// answering never waits for a reader, at least two, so one can read while
// the other answers, and not more than a handful, because they share one
// socket.
func udpReaders() int { return min(max(runtime.GOMAXPROCS(0), 2), 8) }

// stop ends the readers, then waits for the queries still waiting for the
// resolver until ctx ends. The socket stays open for their replies.
func (u *udpServer) stop(ctx context.Context) {
	u.pc.SetReadDeadline(time.Unix(1, 0))
	u.readers.Wait()
	done := make(chan struct{})
	go func() {
		u.waiting.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// udpReader is one reader goroutine's state, reused across batches so a
// query answered from the reply cache allocates nothing.
type udpReader struct {
	u       *udpServer
	in, out []ipv4.Message
	nout    int
	dst     netip.Addr // where the datagram being answered was sent
	q       wireQuery
	clients map[netip.Addr]string // log spellings of recent clients

	lastClient netip.Addr
	lastName   string

	logs []pendingLog // decision lines of the batch, written after its replies
}

// pendingLog is a decision line waiting for its batch to be sent.
type pendingLog struct {
	e      declog.Entry
	folded limitSummary
}

func (u *udpServer) newReader() *udpReader {
	r := &udpReader{
		u:       u,
		in:      make([]ipv4.Message, batchSize),
		out:     make([]ipv4.Message, batchSize),
		clients: make(map[netip.Addr]string),
		logs:    make([]pendingLog, 0, batchSize),
		q:       wireQuery{key: make([]byte, 0, maxNameWire+8)},
	}
	for i := range r.in {
		// As large as miekg's read buffer (Server.UDPSize): a longer
		// datagram is cut at the same place as before.
		r.in[i].Buffers = [][]byte{make([]byte, maxUDPSize)}
		r.out[i].Buffers = [][]byte{make([]byte, 0, maxUDPSize)}
		if u.pktinfo {
			r.in[i].OOB = make([]byte, oobSize)
			r.out[i].OOB = make([]byte, 0, oobSize)
		}
	}
	return r
}

// run reads and answers batches until ctx ends (nil) or the socket fails.
func (r *udpReader) run(ctx context.Context) error {
	for {
		n, err := r.u.conn.ReadBatch(r.in, 0)
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
		now := r.u.s.clock()
		r.nout = 0
		for i := range r.in[:n] {
			m := &r.in[i]
			r.dst = netip.Addr{}
			if r.u.pktinfo {
				r.dst = pktinfoDst(m.OOB[:m.NN])
			}
			r.handle(m.Buffers[0][:m.N], m.Addr, now)
		}
		r.flush()
		r.record()
	}
}

// reply returns the buffer for the next reply of the batch, empty.
func (r *udpReader) reply() []byte { return r.out[r.nout].Buffers[0][:0] }

// commit queues b (built on reply's buffer, or any bytes) for to, the
// sender of the datagram being answered, from the address it was sent to.
func (r *udpReader) commit(to net.Addr, b []byte) {
	m := &r.out[r.nout]
	m.Buffers[0] = append(m.Buffers[0][:0], b...)
	m.Addr = to
	if r.u.pktinfo {
		m.OOB = appendPktinfo(m.OOB[:0], r.dst)
	}
	r.nout++
}

// flush writes the batch's replies. A reply that cannot be sent (the
// client's address unreachable, say) is skipped, as miekg drops it.
func (r *udpReader) flush() {
	ms := r.out[:r.nout]
	for len(ms) > 0 {
		n, err := r.u.conn.WriteBatch(ms, 0)
		n = max(n, 0)
		if err != nil {
			r.u.s.log.Debug("dns reply not written", "client", ms[n].Addr, "err", err)
			n++
		}
		ms = ms[min(n, len(ms)):]
	}
	r.nout = 0
}

// record writes the batch's decision lines once its replies are sent:
// the log writer's wake-up then never delays a reply, and Duration is
// each query's time in egressd, sending included, for one clock reading.
func (r *udpReader) record() {
	end := r.u.s.clock()
	for i := range r.logs {
		l := &r.logs[i]
		l.e.Duration = end.Sub(l.e.Time)
		r.u.s.emit(l.e, l.folded)
	}
	clear(r.logs) // drop the strings until the next batch
	r.logs = r.logs[:0]
}

// clientName is netaddr.String(a), remembered: the decision log needs
// the spelling for every query and the agent's clients are few.
func (r *udpReader) clientName(a netip.Addr) string {
	if a == r.lastClient {
		return r.lastName // the usual case: one agent asking
	}
	n, ok := r.clients[a]
	if !ok {
		n = r.newClientName(a)
	}
	r.lastClient, r.lastName = a, n
	return n
}

func (r *udpReader) newClientName(a netip.Addr) string {
	if len(r.clients) >= maxClientNames {
		clear(r.clients)
	}
	n := a.String()
	if !a.IsValid() {
		n = ""
	}
	r.clients[a] = n
	return n
}

// batchWriter is the dns.ResponseWriter of a query answered inline: its
// reply joins the reader's batch.
type batchWriter struct {
	r      *udpReader
	remote net.Addr
}

func (w *batchWriter) LocalAddr() net.Addr  { return w.r.u.pc.LocalAddr() }
func (w *batchWriter) RemoteAddr() net.Addr { return w.remote }
func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *batchWriter) Write(b []byte) (int, error) {
	w.r.commit(w.remote, b)
	return len(b), nil
}
func (w *batchWriter) Close() error        { return nil }
func (w *batchWriter) TsigStatus() error   { return nil }
func (w *batchWriter) TsigTimersOnly(bool) {}
func (w *batchWriter) Hijack()             {}

// packetWriter is the dns.ResponseWriter of a query answered off the
// reader, once the resolver has spoken: it writes straight to the socket,
// from src when known.
type packetWriter struct {
	pc     net.PacketConn
	remote net.Addr
	src    netip.Addr
}

func (w *packetWriter) LocalAddr() net.Addr  { return w.pc.LocalAddr() }
func (w *packetWriter) RemoteAddr() net.Addr { return w.remote }
func (w *packetWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *packetWriter) Write(b []byte) (int, error) {
	c, ok := w.pc.(*net.UDPConn)
	to, isUDP := w.remote.(*net.UDPAddr)
	if !ok || !isUDP || !w.src.IsValid() {
		return w.pc.WriteTo(b, w.remote)
	}
	n, _, err := c.WriteMsgUDP(b, appendPktinfo(nil, w.src), to)
	return n, err
}
func (w *packetWriter) Close() error        { return nil }
func (w *packetWriter) TsigStatus() error   { return nil }
func (w *packetWriter) TsigTimersOnly(bool) {}
func (w *packetWriter) Hijack()             {}
