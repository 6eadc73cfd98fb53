package declog

import (
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
)

// overflowHost is the Host of a summary that folds denials to many distinct
// hosts, written when the throttle table is full. It is not a valid host
// name, so `egressd suggest` never turns it into a grant.
const overflowHost = "*"

// throttleKey says when two denials are "identical".
type throttleKey struct {
	client  string
	host    string
	port    uint16
	proto   policy.Proto
	verdict policy.Verdict
	reason  policy.Reason
}

// throttleState is one open window: the first denial was written at start,
// n more were suppressed, the last at last.
type throttleState struct {
	first       Entry
	start, last time.Time
	n           int
}

// throttle folds repeated identical denials within a window into the first
// line plus one summary line. The table is bounded: once it holds maxKeys
// windows, denials with new keys share one window per (client, proto,
// verdict, reason), so a flood of distinct host names costs a bounded
// amount of memory and a bounded number of lines per window.
type throttle struct {
	window  time.Duration
	maxKeys int

	mu sync.Mutex
	m  map[throttleKey]*throttleState
}

func newThrottle(window time.Duration, maxKeys int) *throttle {
	return &throttle{window: window, maxKeys: maxKeys, m: make(map[throttleKey]*throttleState)}
}

// throttled reports whether e is only eligible for folding: decisions that
// deny or would deny. Allowed traffic, closes and usage are never folded.
func throttled(e *Entry) bool {
	return e.Event == EventDecision && e.Verdict != policy.Allow
}

// check decides whether e is written. When it is and a previous window for
// the same key ended with suppressed denials, that window's summary is
// returned so the caller writes it first (it describes earlier events).
func (t *throttle) check(e *Entry) (suppress bool, summary Entry, hasSummary bool) {
	k := throttleKey{e.Client, e.Host, e.Port, e.Proto, e.Verdict, e.Reason}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.m[k]
	if !ok && len(t.m) >= t.maxKeys {
		k.host, k.port = overflowHost, 0
		st, ok = t.m[k]
	}
	if ok && e.Time.Sub(st.start) < t.window {
		st.n++
		st.last = e.Time
		return true, Entry{}, false
	}
	if ok && st.n > 0 {
		summary, hasSummary = st.summary(), true
	}
	if !ok {
		st = new(throttleState)
		t.m[k] = st
	}
	st.first, st.start, st.last, st.n = *e, e.Time, e.Time, 0
	if k.host == overflowHost {
		st.first.Host, st.first.Port = overflowHost, 0
	}
	return false, summary, hasSummary
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
		delete(t.m, k)
	}
	// Map order is random; the log reads better, and tests are stable, in
	// time order.
	slices.SortFunc(out, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	return out
}

// summary is the line that stands for the suppressed denials: the first
// denial's fields, Count of the suppressed ones, stamped with the last.
func (st *throttleState) summary() Entry {
	e := st.first
	e.Event = EventSummary
	e.Time = st.last
	e.Count = st.n
	e.Status, e.BytesUp, e.BytesDn, e.Duration = 0, 0, 0, 0
	return e
}
