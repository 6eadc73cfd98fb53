package proxy

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// poolBench is a connPool over in-memory connections, registered with a
// Server as dialHTTP registers real ones.
type poolBench struct {
	t    *testing.T
	s    *Server
	pool *connPool
}

func newPoolBench(t *testing.T, timeout time.Duration) *poolBench {
	s := &Server{epoch: time.Now()}
	s.reg.init()
	return &poolBench{t: t, s: s, pool: newConnPool(timeout)}
}

// conn adopts a fresh connection for host.
func (b *poolBench) conn(host string) *hconn {
	b.t.Helper()
	c1, c2 := net.Pipe()
	b.t.Cleanup(func() { _ = c1.Close(); _ = c2.Close() })
	rq := &request{host: host, port: 80, proto: vocab.ProtoHTTP}
	u := &upConn{Conn: c1, s: b.s, rq: rq, key: rq.destKey()}
	b.s.reg.add(u)
	hc := b.pool.adopt(u, poolKey{"http", host, "80"})
	if hc == nil {
		b.t.Fatal("adopt: got nil")
	}
	return hc
}

func key(host string) poolKey { return poolKey{"http", host, "80"} }

func closed(hc *hconn) bool { return hc.u.ending.Load() }

func countClosed(hcs []*hconn) int {
	n := 0
	for _, hc := range hcs {
		if closed(hc) {
			n++
		}
	}
	return n
}

// TestPoolBounds: a key keeps at most maxIdlePerKey idle connections (the
// ones past it close); past maxIdleTotal the oldest idle connection of any
// key closes.
func TestPoolBounds(t *testing.T) {
	t.Run("per key", func(t *testing.T) {
		b := newPoolBench(t, 0)
		var hcs []*hconn
		for range maxIdlePerKey + 10 {
			hcs = append(hcs, b.conn("a.test"))
		}
		for _, hc := range hcs {
			b.pool.put(hc)
		}
		if got, want := b.pool.idleCount, maxIdlePerKey; got != want {
			t.Errorf("idle: got %d, want %d", got, want)
		}
		if got, want := countClosed(hcs), 10; got != want {
			t.Errorf("closed: got %d, want %d", got, want)
		}
		if got, want := b.s.Len(), maxIdlePerKey; got != want {
			t.Errorf("registered: got %d, want %d", got, want)
		}
	})

	t.Run("in all", func(t *testing.T) {
		b := newPoolBench(t, 0)
		var hcs []*hconn
		for i := range maxIdleTotal + 1 {
			hc := b.conn("h" + strconv.Itoa(i/maxIdlePerKey) + ".test")
			hcs = append(hcs, hc)
			b.pool.put(hc)
		}
		if got, want := b.pool.idleCount, maxIdleTotal; got != want {
			t.Errorf("idle: got %d, want %d", got, want)
		}
		if !closed(hcs[0]) || countClosed(hcs) != 1 {
			t.Errorf("closed: got %d (oldest closed: %v), want only the oldest", countClosed(hcs), closed(hcs[0]))
		}
	})
}

// TestPoolTakeAndForget: take hands out the most recent idle connection of
// the key only; a connection that ends (revoked, upstream gone) leaves the
// pool at once, and the key goes with its last connection.
func TestPoolTakeAndForget(t *testing.T) {
	b := newPoolBench(t, 0)
	older, newer, other := b.conn("a.test"), b.conn("a.test"), b.conn("b.test")
	for _, hc := range []*hconn{older, newer, other} {
		b.pool.put(hc)
	}
	if got := b.pool.take(key("a.test")); got != newer {
		t.Errorf("take: got %p, want the newer %p", got, newer)
	}
	_ = older.u.Close()
	if got := b.pool.take(key("a.test")); got != nil {
		t.Errorf("take after the idle one ended: got %p, want nil", got)
	}
	if got := b.pool.take(key("c.test")); got != nil {
		t.Errorf("take for another key: got %p, want nil", got)
	}
	_ = newer.u.Close()
	_ = other.u.Close()
	if got := len(b.pool.keys); got != 0 || b.pool.idleCount != 0 {
		t.Errorf("after every connection ended: got %d keys, %d idle, want none", got, b.pool.idleCount)
	}
}

// TestPoolIdleTimeout: an idle connection closes once it has been quiet for
// the pool's timeout; one in use does not, and one that was used since the
// timer started gets the rest of its time.
func TestPoolIdleTimeout(t *testing.T) {
	t.Run("timer", func(t *testing.T) {
		b := newPoolBench(t, 10*time.Millisecond)
		hc := b.conn("a.test")
		b.pool.put(hc)
		waitFor(t, "the idle connection closed and unregistered", func() bool { return closed(hc) && b.s.Len() == 0 })
		if got := b.pool.idleCount; got != 0 {
			t.Errorf("idle: got %d, want 0", got)
		}
	})

	cases := []struct {
		name       string
		idle       bool
		quiet      time.Duration
		wantClosed bool
	}{
		{"idle past the timeout", true, 2 * time.Hour, true},
		{"idle, used since", true, 0, false},
		{"in use", false, 2 * time.Hour, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newPoolBench(t, time.Hour)
			hc := b.conn("a.test")
			b.pool.put(hc)
			if !c.idle {
				b.pool.take(key("a.test"))
			}
			hc.u.last.Store(int64(time.Since(b.s.epoch) - c.quiet))
			hc.expire()
			if got := closed(hc); got != c.wantClosed {
				t.Errorf("closed: got %v, want %v", got, c.wantClosed)
			}
		})
	}
}

// TestPoolCloseIdle: Shutdown's closeIdle closes the idle connections and
// leaves the ones in use.
func TestPoolCloseIdle(t *testing.T) {
	b := newPoolBench(t, 0)
	idle, busy := b.conn("a.test"), b.conn("a.test")
	b.pool.put(idle)
	b.pool.closeIdle()
	if !closed(idle) || closed(busy) {
		t.Errorf("closed: got idle %v, busy %v, want true, false", closed(idle), closed(busy))
	}
}
