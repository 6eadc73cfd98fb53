package dnsfilter

import (
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/declog"
	"github.com/egressd/egressd/internal/netaddr"
	"github.com/egressd/egressd/policy"
)

const (
	// limitLogWindow is how often a rate-limited client is logged: one
	// line when its refusals start, then at most one per window, with the
	// refusals in between folded into a summary line.
	limitLogWindow = 10 * time.Second
	// limitLogMax bounds the clients tracked; beyond it (a spoofed-source
	// flood) refusals are accounted to the zero address, one pseudo-client.
	limitLogMax = 4096
)

type limitState struct {
	start      time.Time
	suppressed int
}

// limitLog throttles rate_limited log lines per client.
type limitLog struct {
	mu sync.Mutex
	m  map[netip.Addr]*limitState
}

func (l *limitLog) init() { l.m = make(map[netip.Addr]*limitState) }

// note counts one refused query from client. It reports whether to log it
// and how many refusals of the client's previous window went unlogged.
func (l *limitLog) note(client netip.Addr, now time.Time) (log bool, folded int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.m[client]
	if st == nil && len(l.m) >= limitLogMax {
		client = netip.Addr{}
		st = l.m[client]
	}
	if st != nil && now.Sub(st.start) < limitLogWindow {
		st.suppressed++
		return false, 0
	}
	if st != nil {
		folded = st.suppressed
	}
	l.m[client] = &limitState{start: now}
	return true, folded
}

type limitSummary struct {
	client netip.Addr
	count  int
}

// expire forgets clients whose window has ended (all of them when all is
// set) and returns the unlogged refusals each had.
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
	return out
}

// flushLimitLog writes summary lines for finished rate-limit windows.
func (s *Server) flushLimitLog(all bool) {
	now := s.clock()
	for _, sum := range s.limitLog.expire(now, all) {
		s.rec.Record(declog.Entry{
			Time:    now,
			Event:   declog.EventSummary,
			Client:  netaddr.String(sum.client),
			Proto:   policy.ProtoDNS,
			Verdict: policy.Deny,
			Reason:  policy.ReasonRateLimited,
			Count:   sum.count,
		})
	}
}
