package resolver

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// entry is one cached answer. msg is never modified after the entry is
// built; readers copy it.
type entry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// answer returns a private copy of the cached message whose TTLs are the
// whole seconds left before the entry expires, so a client never caches an
// answer longer than egressd does and the agent and the proxy stay in step.
func (e *entry) answer(now time.Time) *dns.Msg {
	m := e.msg.Copy()
	left := e.expires.Sub(now)
	if left < 0 {
		left = 0
	}
	ttl := uint32(left / time.Second)
	for _, rr := range m.Answer {
		rr.Header().Ttl = ttl
	}
	for _, rr := range m.Ns {
		rr.Header().Ttl = ttl
	}
	return m
}

// cacheTTL is how long m may be cached: the smallest answer TTL for a
// positive answer, the SOA's negative TTL (RFC 2308: min of its TTL and
// MINIMUM) for NXDOMAIN and NODATA, clamped to [minTTL, maxTTL]. A negative
// answer without a SOA gets minTTL: short, but enough to absorb a retry
// storm.
func cacheTTL(m *dns.Msg, minTTL, maxTTL time.Duration) time.Duration {
	var ttl time.Duration
	if len(m.Answer) > 0 {
		low := ^uint32(0)
		for _, rr := range m.Answer {
			low = min(low, rr.Header().Ttl)
		}
		ttl = time.Duration(low) * time.Second
	} else {
		ttl = minTTL
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
				break
			}
		}
	}
	return min(max(ttl, minTTL), maxTTL)
}

// evictSample is how many entries one eviction round looks at. Go's map
// iteration starts at a random point, so the sample costs no extra index.
const evictSample = 16

// cache is a bounded map of answers. When full, an insert first drops
// expired entries from a random sample, else the sampled entry closest to
// expiry: cheap, and the entry dropped is the one with least value left.
type cache struct {
	mu  sync.Mutex
	m   map[key]*entry
	max int
}

func newCache(max int) *cache {
	return &cache{m: make(map[key]*entry), max: max}
}

// get returns the live entry for k, or nil. Expired entries are removed.
func (c *cache) get(k key, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires) {
		delete(c.m, k)
		return nil
	}
	return e
}

func (c *cache) put(k key, e *entry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok {
		c.makeRoom(now, c.max-1)
	}
	c.m[k] = e
}

// makeRoom evicts until at most limit entries remain. Called with mu held.
func (c *cache) makeRoom(now time.Time, limit int) {
	for len(c.m) > limit {
		var victim key
		var soonest time.Time
		found, n := false, 0
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k) // expired: free room without counting
				continue
			}
			if !found || e.expires.Before(soonest) {
				victim, soonest, found = k, e.expires, true
			}
			if n++; n == evictSample {
				break
			}
		}
		if found && len(c.m) > limit {
			delete(c.m, victim)
		}
	}
}

// setMax changes the bound, shrinking the cache at once if needed.
func (c *cache) setMax(max int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = max
	c.makeRoom(time.Time{}, max)
}

func (c *cache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
