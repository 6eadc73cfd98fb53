package dnsfilter

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// floodAddr is the i-th address of a forged-source flood.
func floodAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestLimitLogFloodKeepsWhoWasLimited: a flood of rate-limited source
// addresses past limitLogMax costs one shared window, not memory per
// address; clients tracked before it keep their own accounting; and the
// shared summary names the first clients it folded.
func TestLimitLogFloodKeepsWhoWasLimited(t *testing.T) {
	var l limitLog
	l.init()
	t0 := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	agent := netip.MustParseAddr("172.30.0.2")
	if log, _ := l.note(agent, t0); !log {
		t.Fatal("agent's first refusal: not logged, want logged")
	}
	for i := range limitLogMax - 1 {
		if log, _ := l.note(floodAddr(i), t0); !log {
			t.Fatalf("flood client %d of the first %d: not logged, want logged", i, limitLogMax-1)
		}
	}
	const past = 5000
	logged := 0
	for i := limitLogMax; i < limitLogMax+past; i++ {
		log, _ := l.note(floodAddr(i), t0)
		_, _ = l.note(floodAddr(i), t0) // each folded client twice: the sample holds distinct ones
		if log {
			logged++
		}
	}
	if logged != 1 {
		t.Errorf("refusals past the table logged %d times, want 1 (the shared window's first)", logged)
	}
	if n := len(l.m); n != limitLogMax {
		t.Errorf("table holds %d clients, want %d", n, limitLogMax)
	}
	for range 3 {
		if log, _ := l.note(agent, t0.Add(time.Second)); log {
			t.Error("agent's refusal within its window logged, want folded")
		}
	}

	next := t0.Add(limitLogWindow)
	log, prev := l.note(agent, next)
	if !log || prev.shared || prev.client != agent || prev.count != 3 {
		t.Errorf("agent's next window: got log=%v prev %+v, want logged, the agent's own 3", log, prev)
	}
	log, prev = l.note(floodAddr(limitLogMax+past+1), next)
	// The window's opener refused again first, then each next client.
	var wantSample []netip.Addr
	for i := 0; len(wantSample) < declog.SampleMax; i++ {
		wantSample = append(wantSample, floodAddr(limitLogMax+i))
	}
	if !log || !prev.shared || prev.count != 2*past-1 || !slices.Equal(prev.sample, wantSample) {
		t.Errorf("shared window: got log=%v prev %+v, want logged, shared, count %d, sample %v",
			log, prev, 2*past-1, wantSample)
	}
	e := prev.entry(next)
	if e.Client != sharedClient || len(e.Clients) != declog.SampleMax || e.Clients[0] != wantSample[0].String() ||
		e.Event != vocab.EventSummary || e.Count != 2*past-1 || e.Host != "" {
		t.Errorf("shared summary entry: got %+v, want client %q, %d sampled clients, no host", e, sharedClient, declog.SampleMax)
	}

	if got := l.expire(next.Add(limitLogWindow), true); len(got) != 0 {
		t.Errorf("expire after nothing more was folded: got %+v, want no summaries", got)
	}
	if len(l.m) != 0 || l.shared != nil {
		t.Errorf("after expire: %d clients and shared=%v left, want none", len(l.m), l.shared != nil)
	}
}

// TestLimitLogExpireShared: the shared window's unlogged refusals are
// summarised by the periodic flush too, not only by the next refusal.
func TestLimitLogExpireShared(t *testing.T) {
	var l limitLog
	l.init()
	t0 := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	for i := range limitLogMax + 3 {
		l.note(floodAddr(i), t0)
	}
	if got := l.expire(t0.Add(limitLogWindow/2), false); len(got) != 0 {
		t.Errorf("expire mid-window: got %d summaries, want 0", len(got))
	}
	got := l.expire(t0.Add(limitLogWindow), false)
	if len(got) != 1 || !got[0].shared || got[0].count != 2 || len(got[0].sample) != 2 {
		t.Errorf("expire after the window: got %+v, want one shared summary of 2 with both clients", got)
	}
}
