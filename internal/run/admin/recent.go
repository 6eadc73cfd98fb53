package admin

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// The recent-denials table: counts per host over the last hour, in
// recentSlots buckets of recentSlot each, so "the last hour" is accurate to
// one bucket.
const (
	recentSlot   = 5 * time.Minute
	recentSlots  = 12
	recentWindow = recentSlot * recentSlots
	// DefaultRecentHosts bounds the hosts tracked; denials to further hosts
	// are counted under OtherHosts.
	DefaultRecentHosts = 1000
	// OtherHosts is the Host of the row that sums hosts past the bound.
	OtherHosts = "(other hosts)"
	// maxHostKey truncates host keys: hosts come from the agent.
	maxHostKey = 255
	// recentTop is how many rows Status carries.
	recentTop = 20
)

type slot struct {
	epoch int64 // which recentSlot period (unix time / recentSlot)
	n     []ReasonCount
}

type hostSlots struct {
	slots      [recentSlots]slot
	lastReason string
	lastSeen   time.Time
}

func (h *hostSlots) add(t time.Time, reason string, n int) {
	epoch := t.Unix() / int64(recentSlot/time.Second)
	s := &h.slots[(epoch%recentSlots+recentSlots)%recentSlots] // never negative, whatever the clock says
	if s.epoch != epoch {
		*s = slot{epoch: epoch, n: s.n[:0]}
	}
	s.n = addReason(s.n, reason, n)
	if !t.Before(h.lastSeen) {
		h.lastSeen, h.lastReason = t, reason
	}
}

// addReason adds n denials for reason to counts. The reasons are a small
// fixed vocabulary, so a slice stays short.
func addReason(counts []ReasonCount, reason string, n int) []ReasonCount {
	for i := range counts {
		if counts[i].Reason == reason {
			counts[i].Count += n
			return counts
		}
	}
	return append(counts, ReasonCount{Reason: reason, Count: n})
}

// total counts the buckets still inside the window at now, in all and per
// reason (most first).
func (h *hostSlots) total(now time.Time) (int, []ReasonCount) {
	cur := now.Unix() / int64(recentSlot/time.Second)
	n := 0
	var by []ReasonCount
	for _, s := range h.slots {
		if s.epoch > cur-recentSlots && s.epoch <= cur {
			for _, rc := range s.n {
				n += rc.Count
				by = addReason(by, rc.Reason, rc.Count)
			}
		}
	}
	sortReasons(by)
	return n, by
}

func sortReasons(by []ReasonCount) {
	slices.SortFunc(by, func(a, b ReasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
}

// recent is a bounded table of denial counts per host over the last hour.
type recent struct {
	mu        sync.Mutex
	max       int
	hosts     map[string]*hostSlots
	other     hostSlots
	lastPrune time.Time
}

func newRecent(max int) *recent {
	return &recent{max: max, hosts: make(map[string]*hostSlots)}
}

func (r *recent) add(host, reason string, t time.Time, n int) {
	if len(host) > maxHostKey {
		host = host[:maxHostKey]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	if h == nil {
		if len(r.hosts) >= r.max {
			r.prune(t)
		}
		if len(r.hosts) >= r.max {
			r.other.add(t, reason, n)
			return
		}
		h = new(hostSlots)
		r.hosts[host] = h
	}
	h.add(t, reason, n)
}

// prune drops hosts not seen within the window; at most once a minute, so
// a full table of live hosts does not turn every new host into a scan.
func (r *recent) prune(now time.Time) {
	if now.Sub(r.lastPrune) < time.Minute {
		return
	}
	r.lastPrune = now
	for k, h := range r.hosts {
		if now.Sub(h.lastSeen) >= recentWindow {
			delete(r.hosts, k)
		}
	}
}

// top returns the hosts with the most denials in the last hour, most first,
// then the OtherHosts row if it counted anything.
func (r *recent) top(now time.Time, limit int) []HostCount {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []HostCount
	for k, h := range r.hosts {
		if n, by := h.total(now); n > 0 {
			out = append(out, HostCount{Host: k, Count: n, LastReason: h.lastReason, LastSeen: h.lastSeen, Reasons: by})
		}
	}
	slices.SortFunc(out, func(a, b HostCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Host, b.Host))
	})
	other := HostCount{Host: OtherHosts, LastReason: r.other.lastReason, LastSeen: r.other.lastSeen}
	other.Count, other.Reasons = r.other.total(now)
	if len(out) > limit {
		for _, hc := range out[limit:] {
			other.Count += hc.Count
			for _, rc := range hc.Reasons {
				other.Reasons = addReason(other.Reasons, rc.Reason, rc.Count)
			}
			if hc.LastSeen.After(other.LastSeen) {
				other.LastSeen, other.LastReason = hc.LastSeen, hc.LastReason
			}
		}
		out = out[:limit]
	}
	if other.Count > 0 {
		sortReasons(other.Reasons)
		out = append(out, other)
	}
	return out
}
