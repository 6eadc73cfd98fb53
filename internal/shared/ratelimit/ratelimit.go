// Package ratelimit owns egressd's keyed token buckets: one golang.org/x/time/rate
// limiter per client, destination or DNS client, in a table whose size is
// bounded so that a flood of distinct keys cannot grow memory without limit.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is a token bucket shape. The zero Limit means unlimited.
type Limit struct {
	RPS   float64
	Burst int
}

// Unlimited reports whether l imposes no limit.
func (l Limit) Unlimited() bool { return l.RPS <= 0 && l.Burst <= 0 }

type entry struct {
	lim      *rate.Limiter
	shape    Limit
	lastSeen time.Time
}

// Table maps keys to token buckets. Entries idle longer than Idle are
// dropped; when the table holds Max entries and none is idle, the least
// recently seen entry of a small sample is evicted. Eviction can only ever
// refill a bucket early, never starve a key, which is why it is acceptable
// as the memory bound of last resort. Safe for concurrent use.
type Table[K comparable] struct {
	mu        sync.Mutex
	m         map[K]*entry
	max       int
	idle      time.Duration
	lastSweep time.Time
}

// NewTable returns a table holding at most max keys (default 65536 when
// max <= 0), forgetting keys idle for longer than idle (default 10m).
func NewTable[K comparable](max int, idle time.Duration) *Table[K] {
	if max <= 0 {
		max = 65536
	}
	if idle <= 0 {
		idle = 10 * time.Minute
	}
	return &Table[K]{m: make(map[K]*entry), max: max, idle: idle}
}

// Allow takes one token from key's bucket shaped l at time now. When the
// bucket is empty it returns false and how long until a token is due.
// A changed shape (after a policy reload) is applied to the existing bucket.
func (t *Table[K]) Allow(key K, l Limit, now time.Time) (bool, time.Duration) {
	if l.Unlimited() {
		return true, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[key]
	if e == nil {
		t.makeRoom(now)
		e = &entry{lim: rate.NewLimiter(rate.Limit(l.RPS), burstOf(l)), shape: l}
		t.m[key] = e
	} else if e.shape != l {
		e.lim.SetLimitAt(now, rate.Limit(l.RPS))
		e.lim.SetBurstAt(now, burstOf(l))
		e.shape = l
	}
	e.lastSeen = now
	// AllowN, not ReserveN and a cancel: it takes nothing from an empty
	// bucket, and returns no *Reservation to allocate on every call.
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	if l.RPS <= 0 {
		return false, time.Second // never refills
	}
	missing := 1 - e.lim.TokensAt(now)
	return false, max(time.Duration(missing/l.RPS*float64(time.Second)), time.Nanosecond)
}

// Len is the number of keys currently held.
func (t *Table[K]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

func burstOf(l Limit) int {
	if l.Burst > 0 {
		return l.Burst
	}
	// A positive rate with no burst would never admit anything.
	return max(1, int(l.RPS))
}

// makeRoom keeps len(m) < max. Called with mu held.
//
// The idle sweep scans the whole map, so it runs at most once per idle/4:
// a full table under a flood of new keys (spoofed DNS sources, say) must
// cost each insert a constant, not a scan of every entry under the lock.
// Between sweeps a full table evicts the least recently seen of a small
// random sample.
func (t *Table[K]) makeRoom(now time.Time) {
	if now.Sub(t.lastSweep) >= t.idle/4 {
		t.lastSweep = now
		for k, e := range t.m {
			if now.Sub(e.lastSeen) > t.idle {
				delete(t.m, k)
			}
		}
	}
	for len(t.m) >= t.max {
		t.evictSample()
	}
}

// evictSample drops the least recently seen of up to 8 entries; map
// iteration order is random, so this samples without a second index.
func (t *Table[K]) evictSample() {
	var oldestKey K
	var oldest *entry
	n := 0
	for k, e := range t.m {
		if oldest == nil || e.lastSeen.Before(oldest.lastSeen) {
			oldestKey, oldest = k, e
		}
		if n++; n == 8 {
			break
		}
	}
	delete(t.m, oldestKey)
}
