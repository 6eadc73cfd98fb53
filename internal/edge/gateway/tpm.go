package gateway

import (
	"sync"
	"time"
)

// tpmBuckets enforces providers.<name>.tokens_per_minute: one bucket per
// provider holding up to the limit, refilled continuously. A call is
// admitted while the bucket is positive and takes its estimated input at
// once; when it settles the difference to its real input+output is taken
// (or refunded), so the bucket may go into debt and later calls wait it
// out. Keys are provider names from the policy, so the map is bounded.
type tpmBuckets struct {
	mu sync.Mutex
	m  map[string]*tpmBucket
}

type tpmBucket struct {
	level float64
	last  time.Time
}

// take admits a call of n estimated tokens, or says how long to wait.
func (t *tpmBuckets) take(name string, limit int, n int64, now time.Time) (bool, time.Duration) {
	if limit <= 0 {
		return true, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucket(name, limit, now)
	if b.level <= 0 {
		perSec := float64(limit) / 60
		return false, time.Duration((1 - b.level) / perSec * float64(time.Second))
	}
	b.level -= float64(n)
	return true, 0
}

// adjust takes delta more tokens (negative: refund) from name's bucket.
func (t *tpmBuckets) adjust(name string, limit int, delta int64) {
	if limit <= 0 || delta == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.m[name]; b != nil {
		b.level = min(b.level-float64(delta), float64(limit))
	}
}

// bucket returns name's bucket refilled to now. Called with mu held.
func (t *tpmBuckets) bucket(name string, limit int, now time.Time) *tpmBucket {
	if t.m == nil {
		t.m = make(map[string]*tpmBucket)
	}
	b := t.m[name]
	if b == nil {
		b = &tpmBucket{level: float64(limit), last: now}
		t.m[name] = b
		return b
	}
	if el := now.Sub(b.last); el > 0 {
		b.level = min(float64(limit), b.level+el.Seconds()*float64(limit)/60)
		b.last = now
	}
	return b
}
