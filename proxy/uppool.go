package proxy

import (
	"bufio"
	"io"
	"math"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/lib/bufpool"
	"github.com/egressd/egressd/proxy/internal/sockio"
)

// Pool bounds: a key's share covers any agent's parallelism to one host,
// the total caps the descriptors that idle connections hold.
const (
	maxIdlePerKey = 256
	maxIdleTotal  = 4096
)

// poolKey is what a connection may be reused for: the request URL's
// scheme, host and port (net/http's connectMethodKey for a direct
// request). prepareOutbound puts the canonical host and port there, so one
// key is one destination, the one the connection was dialed and checked
// for.
type poolKey struct{ scheme, host, port string }

func poolKeyOf(u *url.URL) poolKey {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return poolKey{scheme: u.Scheme, host: u.Hostname(), port: port}
}

// hconn is one upstream HTTP/1.1 connection: carrying one request at a
// time, or idle in the pool.
type hconn struct {
	u     *upConn
	pool  *connPool
	set   *keyConns
	head  headLimit // bounds the bytes read for a response head
	br    *bufio.Reader
	bw    *bufio.Writer
	probe sockio.Probe
	abort func() // closes the connection; made once, run by a cancelled request

	// Guarded by pool.mu.
	idle       bool
	prev, next *hconn // the idle list, oldest first
	armed      bool   // timer runs
	timer      *time.Timer
}

// keyConns is one key's connections: the idle ones, most recent last, and
// how many are open at all (the key is dropped with its last connection).
type keyConns struct {
	key  poolKey
	idle []*hconn
	open int
}

// connPool holds idle upstream connections. Nothing reads them while they
// wait: take probes a connection before handing it out instead.
type connPool struct {
	timeout time.Duration // idle connections close after this; 0: never

	mu        sync.Mutex
	keys      map[poolKey]*keyConns
	oldest    *hconn // the idle list across all keys
	newest    *hconn
	idleCount int
}

func newConnPool(timeout time.Duration) *connPool {
	return &connPool{timeout: timeout, keys: make(map[poolKey]*keyConns)}
}

// adopt makes a freshly dialed connection an hconn of key; nil if it was
// ended (revoked, idle) before it could be adopted.
func (p *connPool) adopt(u *upConn, key poolKey) *hconn {
	hc := &hconn{u: u, pool: p, head: headLimit{r: u, left: math.MaxInt64}}
	hc.br = bufio.NewReaderSize(&hc.head, 4<<10)
	hc.bw = bufio.NewWriterSize(connWriter{u}, 4<<10)
	if sc, ok := u.Conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			hc.probe.Init(rc)
		}
	}
	hc.abort = func() { _ = u.Close() }
	p.mu.Lock()
	hc.set = p.keys[key]
	if hc.set == nil {
		hc.set = &keyConns{key: key}
		p.keys[key] = hc.set
	}
	hc.set.open++
	p.mu.Unlock()
	if !u.attach(hc) {
		p.forget(hc)
		return nil
	}
	return hc
}

// take hands out the most recently used idle connection for key that is
// still fit for a request; nil when there is none.
func (p *connPool) take(key poolKey) *hconn {
	for {
		p.mu.Lock()
		set := p.keys[key]
		if set == nil || len(set.idle) == 0 {
			p.mu.Unlock()
			return nil
		}
		hc := set.idle[len(set.idle)-1]
		p.unidleLocked(hc)
		p.mu.Unlock()
		if hc.br.Buffered() == 0 && hc.probe.Quiet() {
			return hc
		}
		_ = hc.u.Close() // closed by the upstream, or it sent bytes unasked
	}
}

// put returns a connection whose response ended cleanly. It is closed
// instead when its key already has maxIdlePerKey idle ones; past
// maxIdleTotal the oldest idle connection of any key is closed.
func (p *connPool) put(hc *hconn) {
	p.mu.Lock()
	if len(hc.set.idle) >= maxIdlePerKey || hc.u.ending.Load() {
		p.mu.Unlock()
		_ = hc.u.Close()
		return
	}
	hc.set.idle = append(hc.set.idle, hc)
	hc.idle = true
	hc.prev, hc.next = p.newest, nil
	if p.newest != nil {
		p.newest.next = hc
	} else {
		p.oldest = hc
	}
	p.newest = hc
	p.idleCount++
	var evict *hconn
	if p.idleCount > maxIdleTotal {
		evict = p.oldest
		p.unidleLocked(evict)
	}
	p.armLocked(hc)
	p.mu.Unlock()
	if evict != nil {
		_ = evict.u.Close()
	}
}

// armLocked starts hc's idle timer unless it runs: it fires once per
// timeout, not per request, and expire re-arms it for what is left.
func (p *connPool) armLocked(hc *hconn) {
	if p.timeout <= 0 || hc.armed {
		return
	}
	hc.armed = true
	if hc.timer == nil {
		hc.timer = time.AfterFunc(p.timeout, hc.expire)
		return
	}
	hc.timer.Reset(p.timeout)
}

// expire closes hc if it has been idle for the pool's timeout; a
// connection in use is left alone (put arms the timer again).
func (hc *hconn) expire() {
	p := hc.pool
	p.mu.Lock()
	if !hc.idle {
		hc.armed = false
		p.mu.Unlock()
		return
	}
	if rest := p.timeout - hc.u.quiet(); rest > 0 {
		hc.timer.Reset(rest)
		p.mu.Unlock()
		return
	}
	hc.armed = false
	p.unidleLocked(hc)
	p.mu.Unlock()
	_ = hc.u.Close()
}

// unidleLocked takes hc out of the idle lists.
func (p *connPool) unidleLocked(hc *hconn) {
	if !hc.idle {
		return
	}
	hc.idle = false
	idle := hc.set.idle
	for i := len(idle) - 1; i >= 0; i-- {
		if idle[i] == hc {
			copy(idle[i:], idle[i+1:])
			idle[len(idle)-1] = nil
			hc.set.idle = idle[:len(idle)-1]
			break
		}
	}
	if hc.prev != nil {
		hc.prev.next = hc.next
	} else {
		p.oldest = hc.next
	}
	if hc.next != nil {
		hc.next.prev = hc.prev
	} else {
		p.newest = hc.prev
	}
	hc.prev, hc.next = nil, nil
	p.idleCount--
}

// forget drops a connection that ended (upConn.end calls it).
func (p *connPool) forget(hc *hconn) {
	p.mu.Lock()
	p.unidleLocked(hc)
	hc.set.open--
	if hc.set.open == 0 {
		delete(p.keys, hc.set.key)
	}
	if hc.timer != nil {
		hc.timer.Stop()
		hc.armed = false
	}
	p.mu.Unlock()
}

// closeIdle closes every idle connection (Shutdown, tests).
func (p *connPool) closeIdle() {
	p.mu.Lock()
	var idle []*hconn
	for hc := p.oldest; hc != nil; hc = hc.next {
		idle = append(idle, hc)
	}
	for _, hc := range idle {
		p.unidleLocked(hc)
	}
	p.mu.Unlock()
	for _, hc := range idle {
		_ = hc.u.Close()
	}
}

// connWriter is what an hconn's bufio.Writer writes to. Once a request
// head is flushed, bufio.Writer hands the body's copy to ReadFrom, which
// sends each piece on as it is read: a slow body keeps the connection
// moving (its idle timer sees the bytes) instead of collecting in the
// buffer.
type connWriter struct{ u *upConn }

func (w connWriter) Write(p []byte) (int, error) { return w.u.Write(p) }

func (w connWriter) ReadFrom(r io.Reader) (int64, error) { return bufpool.Copy(w.u, r) }

// headLimit is the reader under an hconn's bufio.Reader: while a response
// head is read, left bounds the bytes taken from the connection.
type headLimit struct {
	r    io.Reader
	left int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errHeadTooBig
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
