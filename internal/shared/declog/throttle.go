package declog

import (
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Overflow summaries. Neither "*" is a valid host name or client address,
// so `egressd suggest` never turns one into a grant; the names that were
// folded travel in the summary's Hosts and Clients samples instead.
const (
	overflowHost   = "*"
	overflowClient = "*"
	// SampleMax is how many distinct host names (and, for the shared
	// overflow, clients) an overflow summary keeps: the first ones folded
	// in its window. Enough to show an operator the real targets behind a
	// flood of one-off names, few enough to keep the line short.
	SampleMax = 8
)

// throttleKey says when two denials are "identical".
type throttleKey struct {
	client  string
	host    string
	port    uint16
	proto   vocab.Proto
	verdict vocab.Verdict
	reason  vocab.Reason
	// call is "METHOD /canonical/path" for gateway apis: route entries,
	// so that refusals of different calls on one route stay apart (they
	// are what `suggest` proposes rules from); "" for every other edge.
	call string
}

// keyKind is what a throttle key stands for.
type keyKind uint8

const (
	kindOwn            keyKind = iota // one client, one host: the ordinary case
	kindClientOverflow                // one client past its quota: its new hosts, folded
	kindSharedOverflow                // clients that found the table full: all folded
)

// throttleState is one open window: the first denial was written at start,
// n more were suppressed, the last at last.
type throttleState struct {
	kind        keyKind
	burst       bool // charged to the pool's burst room, not the client's reserve
	first       Entry
	start, last time.Time
	n           int
	// Overflow keys only: distinct names folded in this window, at most
	// SampleMax each. Handed to the summary entry, never reused.
	hosts, clients []string
}

// clientKeys is how many keys one client holds in a pool.
type clientKeys struct {
	own      int // kindOwn keys: bounded by the per-client quota
	reserved int // keys charged to its reserve, the rest to burst room
	total    int // all its keys; the client leaves the pool at 0
}

// pool is one half of the table.
type pool struct {
	clients map[string]*clientKeys
	keys    int // keys charged to clients (shared overflow keys are not)
	burst   int // of those, keys past their client's reserve
}

// reserve is how many keys every admitted client is sure to get, however
// full the rest of its pool is; one of them is kept for an overflow key,
// so a client always keeps summaries under its own name.
const reserve = 8

// throttle folds repeated identical denials within a window into the first
// line plus one summary line. Its memory and its output per window are
// bounded, and the bounds are shared out so a flood cannot spend them for
// others:
//
//   - Each client holds at most perClient keys of its own. Past that, its
//     denials to further hosts fold into one overflow key per (proto,
//     verdict, reason) of that client, whose summary names the first
//     SampleMax hosts folded. One client flooding distinct names cannot
//     hide another client's targets, and its own real targets still show
//     up when they came early or among the first folded.
//   - Half of a pool is reserved: up to maxClients clients are admitted,
//     each with reserve keys no one else can take. The other half is
//     burst room, first come, for keys past a client's reserve. A swarm of
//     addresses can use up the burst room and the free client slots, but
//     never an admitted client's reserve. Clients arriving when every slot
//     is taken fold into one shared overflow key per (proto, verdict,
//     reason) that samples both clients and hosts.
//   - DNS has a pool of its own: it arrives over UDP, whose source address
//     anything on the network with NET_RAW can forge (compose drops it from
//     the agent; this is the second line). A forged-source swarm of DNS
//     denials cannot take the slots of the proxy's clients, whose addresses
//     a TCP handshake proved.
//
// So the table holds at most maxKeys keys charged to clients, plus one
// shared key per (proto, verdict, reason) and pool.
type throttle struct {
	window     time.Duration
	perClient  int
	maxClients int // per pool
	burstCap   int // per pool

	mu    sync.Mutex
	m     map[throttleKey]*throttleState
	pools [2]pool // dnsPool, connPool
}

const (
	dnsPool  = 0
	connPool = 1
)

// newThrottle splits maxKeys evenly between the two pools, and each pool
// between reserves and burst room.
func newThrottle(window time.Duration, maxKeys, perClient int) *throttle {
	share := max(maxKeys/2, reserve)
	maxClients := max(share/(2*reserve), 1)
	t := &throttle{
		window:     window,
		perClient:  max(perClient, 1),
		maxClients: maxClients,
		burstCap:   share - maxClients*reserve,
		m:          make(map[throttleKey]*throttleState),
	}
	for i := range t.pools {
		t.pools[i].clients = make(map[string]*clientKeys)
	}
	return t
}

func poolOf(p vocab.Proto) int {
	if p == vocab.ProtoDNS {
		return dnsPool
	}
	return connPool
}

// throttled reports whether e is only eligible for folding: decisions that
// deny or would deny. Allowed traffic, closes and usage are never folded.
func throttled(e *Entry) bool {
	return e.Event == vocab.EventDecision && e.Verdict != vocab.Allow
}

// check decides whether e is written. When it is and a previous window for
// the same key ended with suppressed denials, that window's summary is
// returned so the caller writes it first (it describes earlier events).
func (t *throttle) check(e *Entry) (suppress bool, summary Entry, hasSummary bool) {
	k := throttleKey{e.Client, e.Host, e.Port, e.Proto, e.Verdict, e.Reason, ""}
	if e.Path != "" {
		k.call = e.Method + " " + e.Path
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[k]
	kind := kindOwn
	if !ok {
		k, kind = t.place(k)
		st, ok = t.m[k]
	}
	if ok && e.Time.Sub(st.start) < t.window {
		st.n++
		st.last = e.Time
		st.sample(e)
		return true, Entry{}, false
	}
	if ok && st.n > 0 {
		summary, hasSummary = st.summary(), true
	}
	if !ok {
		st = t.add(k, kind)
	}
	// The first denial of a window is written as it is, real host and
	// client included, even in an overflow window.
	st.first, st.start, st.last, st.n = *e, e.Time, e.Time, 0
	st.hosts, st.clients = nil, nil
	return false, summary, hasSummary
}

// place says which key a denial without a key of its own goes to: a new
// key of its own while the client's quota and the room allow, else the
// client's overflow key, else the shared one.
func (t *throttle) place(k throttleKey) (throttleKey, keyKind) {
	p := &t.pools[poolOf(k.proto)]
	ck := p.clients[k.client]
	if ck == nil {
		if len(p.clients) >= t.maxClients {
			k.client, k.host, k.port = overflowClient, overflowHost, 0
			return k, kindSharedOverflow
		}
		return k, kindOwn // admitted: its reserve is free
	}
	burst := p.burst < t.burstCap
	if ck.own < t.perClient && (ck.reserved < reserve-1 || burst) {
		return k, kindOwn
	}
	ok := k
	ok.host, ok.port = overflowHost, 0
	if _, exists := t.m[ok]; exists || ck.reserved < reserve || burst {
		return ok, kindClientOverflow
	}
	k.client, k.host, k.port = overflowClient, overflowHost, 0
	return k, kindSharedOverflow
}

// add opens k and charges it to its client: to the client's reserve while
// that lasts (the last reserve key only to an overflow key), to the pool's
// burst room after. place has checked there is room.
func (t *throttle) add(k throttleKey, kind keyKind) *throttleState {
	st := &throttleState{kind: kind}
	t.m[k] = st
	if kind == kindSharedOverflow {
		return st
	}
	p := &t.pools[poolOf(k.proto)]
	ck := p.clients[k.client]
	if ck == nil {
		ck = new(clientKeys)
		p.clients[k.client] = ck
	}
	limit := reserve
	if kind == kindOwn {
		limit, ck.own = reserve-1, ck.own+1
	}
	if ck.reserved < limit {
		ck.reserved++
	} else {
		st.burst = true
		p.burst++
	}
	ck.total++
	p.keys++
	return st
}

// remove forgets k and gives its room back; a client whose last key goes
// leaves the pool, and its reserve with it.
func (t *throttle) remove(k throttleKey, st *throttleState) {
	delete(t.m, k)
	if st.kind == kindSharedOverflow {
		return
	}
	p := &t.pools[poolOf(k.proto)]
	ck := p.clients[k.client]
	if ck == nil {
		return
	}
	if st.burst {
		p.burst--
	} else {
		ck.reserved--
	}
	ck.total--
	p.keys--
	if st.kind == kindOwn {
		ck.own--
	}
	if ck.total <= 0 {
		delete(p.clients, k.client)
	}
}

// sample remembers who and what an overflow window folded: the first
// SampleMax distinct of each.
func (st *throttleState) sample(e *Entry) {
	if st.kind == kindOwn {
		return
	}
	st.hosts = addSample(st.hosts, e.Host)
	if st.kind == kindSharedOverflow {
		st.clients = addSample(st.clients, e.Client)
	}
}

func addSample(s []string, v string) []string {
	if len(s) >= SampleMax || slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// sweep ends every window older than the throttle window at now (all of
// them when all is set) and returns the summaries of those that suppressed
// something.
func (t *throttle) sweep(now time.Time, all bool) []Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Entry
	for k, st := range t.m {
		if !all && now.Sub(st.start) < t.window {
			continue
		}
		if st.n > 0 {
			out = append(out, st.summary())
		}
		t.remove(k, st)
	}
	// Map order is random; the log reads better, and tests are stable, in
	// time order.
	slices.SortFunc(out, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	return out
}

// summary is the line that stands for the suppressed denials: the first
// denial's fields, Count of the suppressed ones, stamped with the last. An
// overflow summary names no single host (or, shared, client): it carries
// the samples instead, and drops the fields that belonged to the first
// denial alone.
func (st *throttleState) summary() Entry {
	e := st.first
	e.Event = vocab.EventSummary
	e.Time = st.last
	e.Count = st.n
	e.Status, e.BytesUp, e.BytesDn, e.Duration = 0, 0, 0, 0
	if st.kind == kindOwn {
		return e
	}
	e.Host, e.Port, e.Hosts = overflowHost, 0, st.hosts
	e.Method, e.QType, e.Rule, e.Hint = "", "", "", ""
	if st.kind == kindSharedOverflow {
		e.Client, e.Clients = overflowClient, st.clients
	}
	return e
}
