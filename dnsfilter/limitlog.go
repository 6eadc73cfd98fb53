package dnsfilter

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
)

const (
	// limitLogWindow is how often a rate-limited client is logged: one
	// line when its refusals start, then at most one per window, with the
	// refusals in between folded into a summary line.
	limitLogWindow = 10 * time.Second
	// limitLogMax bounds the clients tracked. Clients already tracked keep
	// their own lines whatever happens after; further ones (only a flood
	// of forged source addresses gets this far) share one window, whose
	// summary names the first declog.SampleMax clients it folded.
	limitLogMax = 4096
	// sharedClient is the Client of the shared window's summary: not an
	// address, so nothing reads it as one.
	sharedClient = "*"
)

type limitState struct {
	start      time.Time
	suppressed int
	sample     []netip.Addr // shared window only: distinct clients folded
}

// limitLog throttles rate_limited log lines per client.
type limitLog struct {
	mu     sync.Mutex
	m      map[netip.Addr]*limitState
	shared *limitState // clients past limitLogMax; nil until needed
}

func (l *limitLog) init() { l.m = make(map[netip.Addr]*limitState) }

// limitSummary is the unlogged refusals of one ended window.
type limitSummary struct {
	client netip.Addr
	shared bool         // the window of clients past limitLogMax
	sample []netip.Addr // shared: who was folded (the first few)
	count  int
}

// entry is the summary line for s, written at now.
func (s limitSummary) entry(now time.Time) declog.Entry {
	e := declog.Entry{
		Time:    now,
		Event:   vocab.EventSummary,
		Client:  netaddr.String(s.client),
		Proto:   vocab.ProtoDNS,
		Verdict: vocab.Deny,
		Reason:  vocab.ReasonRateLimited,
		Count:   s.count,
	}
	if s.shared {
		e.Client = sharedClient
		for _, a := range s.sample {
			e.Clients = append(e.Clients, netaddr.String(a))
		}
	}
	return e
}

// note counts one refused query from client. It reports whether to log it
// and, when that starts a new window, the unlogged refusals of the window
// it replaces (count 0 when none).
func (l *limitLog) note(client netip.Addr, now time.Time) (log bool, prev limitSummary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, shared := l.m[client], false
	if st == nil && len(l.m) >= limitLogMax {
		st, shared = l.shared, true
	}
	if st != nil && now.Sub(st.start) < limitLogWindow {
		st.suppressed++
		if shared && len(st.sample) < declog.SampleMax && !slices.Contains(st.sample, client) {
			st.sample = append(st.sample, client)
		}
		return false, limitSummary{}
	}
	if st != nil && st.suppressed > 0 {
		prev = limitSummary{client: client, shared: shared, sample: st.sample, count: st.suppressed}
	}
	fresh := &limitState{start: now}
	if shared {
		l.shared = fresh
	} else {
		l.m[client] = fresh
	}
	return true, prev
}

// expire forgets windows that have ended (all of them when all is set)
// and returns the unlogged refusals each had.
func (l *limitLog) expire(now time.Time, all bool) []limitSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []limitSummary
	for c, st := range l.m {
		if !all && now.Sub(st.start) < limitLogWindow {
			continue
		}
		if st.suppressed > 0 {
			out = append(out, limitSummary{client: c, count: st.suppressed})
		}
		delete(l.m, c)
	}
	if st := l.shared; st != nil && (all || now.Sub(st.start) >= limitLogWindow) {
		if st.suppressed > 0 {
			out = append(out, limitSummary{shared: true, sample: st.sample, count: st.suppressed})
		}
		l.shared = nil
	}
	return out
}

// flushLimitLog writes summary lines for finished rate-limit windows.
func (s *Server) flushLimitLog(all bool) {
	now := s.clock()
	for _, sum := range s.limitLog.expire(now, all) {
		s.rec.Record(sum.entry(now))
	}
}
