package dnsfilter

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// maxReplies bounds the reply cache. The resolver's own cache is the
// larger one (10000 by default); this one only needs the names the agent
// keeps asking for.
const maxReplies = 4096

// expiringResolver is what a resolver offers for its answers to be kept
// as packed replies: when each answer leaves its cache, and a counter of
// its flushes. *resolver.Resolver implements it; without it every granted
// query takes the full path.
type expiringResolver interface {
	ExchangeUntil(ctx context.Context, name string, qtype uint16) (*dns.Msg, time.Time, error)
	Generation() uint64
}

// packedReply is a granted query's reply, filtered and packed exactly as
// the full path wrote it, kept so the next identical query is answered by
// patching a copy: its ID, RD and CD bits, the question's case, and the
// TTLs, which count down to the resolver entry's expiry as the resolver's
// own copies do. It is only used under the policy and resolver
// generation it was made with, before that expiry, and for senders that
// take its whole size (it was not truncated or compressed).
type packedReply struct {
	pol   *policy.Policy
	gen   uint64
	until time.Time
	host  string // the decision log's spelling, also given to Decide
	wire  []byte
	ttls  []uint16 // offsets of the TTLs to patch

	verdict vocab.Verdict
	reason  vocab.Reason
	rule    *policy.Rule
}

// valid reports whether r may answer a query of size under p, resolver
// generation gen, at now.
func (r *packedReply) valid(p *policy.Policy, gen uint64, size int, now time.Time) bool {
	return r.pol == p && r.gen == gen && len(r.wire) <= size && now.Before(r.until)
}

// appendTo appends r, patched for q at now, to dst.
func (r *packedReply) appendTo(dst []byte, q *wireQuery, now time.Time) []byte {
	start := len(dst)
	dst = append(dst, r.wire...)
	b := dst[start:]
	binary.BigEndian.PutUint16(b, q.id)
	flags := binary.BigEndian.Uint16(b[2:])&^(bitRD|bitCD) | q.flags
	binary.BigEndian.PutUint16(b[2:], flags)
	copy(b[headerLen:], q.qname)
	ttl := uint32(max(r.until.Sub(now), 0) / time.Second)
	for _, off := range r.ttls {
		binary.BigEndian.PutUint32(b[off:], ttl)
	}
	return dst
}

// replyCache holds packed replies by wireQuery.key.
type replyCache struct {
	mu sync.RWMutex
	m  map[string]*packedReply
}

func (c *replyCache) init() { c.m = make(map[string]*packedReply) }

// get returns the reply kept for key, valid or not; its host spares the
// caller building the name as a string.
func (c *replyCache) get(key []byte) *packedReply {
	c.mu.RLock()
	r := c.m[string(key)]
	c.mu.RUnlock()
	return r
}

// put keeps r under key. When full it first drops replies that can no
// longer be used (their policy, generation or expiry passed), else an
// arbitrary one: map iteration starts at a random point.
func (c *replyCache) put(key string, r *packedReply, p *policy.Policy, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= maxReplies {
		n := 0
		for k, old := range c.m {
			if n == 0 || !old.valid(p, gen, maxUDPSize, now) {
				delete(c.m, k)
			}
			if n++; n == 16 {
				break
			}
		}
	}
	c.m[key] = r
}

// keep stores reply (the packed bytes written for query r) when the
// outcome came from the resolver with a known expiry and the bytes are
// what any later sender taking their size would get: not truncated, not
// compressed, for a question the fast path reads.
func (s *Server) keep(p *policy.Policy, r *dns.Msg, reply *dns.Msg, b []byte, o outcome) {
	if o.until.IsZero() || reply.Truncated || reply.Compress || len(b) > maxUDPSize {
		return
	}
	var buf [maxNameWire + 8]byte
	q := wireQuery{key: buf[:0]}
	end, ok := readName(b, headerLen, &q)
	if !ok || end+4 > len(b) {
		return
	}
	q.hostN = len(q.key)
	q.key = appendKeyTail(q.key, binary.BigEndian.Uint16(b[end:]), r.IsEdns0() != nil)
	if old := s.replies.get(q.key); old != nil && old.pol == p && old.gen == o.gen && old.until.Equal(o.until) {
		return // the same answer is kept already
	}
	now := s.clock()
	ttls, ok := recordTTLs(b)
	if !ok || !countsDown(b, ttls, o.until, now) {
		return
	}
	pr := &packedReply{
		pol: p, gen: o.gen, until: o.until, host: string(q.host()),
		wire: append([]byte(nil), b...), ttls: ttls,
		verdict: o.verdict, reason: o.reason, rule: o.rule,
	}
	s.replies.put(string(q.key), pr, p, o.gen, now)
}

// countsDown reports whether every TTL at offs in b is the seconds left
// until until, as the resolver sets them (give or take the second that
// may have turned since): only then is patching them all to one value
// what the full path would write.
func countsDown(b []byte, offs []uint16, until, now time.Time) bool {
	left := int64(max(until.Sub(now), 0) / time.Second)
	for _, off := range offs {
		ttl := int64(binary.BigEndian.Uint32(b[off:]))
		if ttl != left && ttl != left+1 {
			return false
		}
	}
	return true
}
