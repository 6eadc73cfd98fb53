package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestAllowBurstThenRecover(t *testing.T) {
	tab := NewTable[string](10, time.Minute)
	now := time.Unix(1000, 0)
	l := Limit{RPS: 1, Burst: 3}
	for i := range 3 {
		if ok, _ := tab.Allow("a", l, now); !ok {
			t.Fatalf("request %d within burst denied", i)
		}
	}
	ok, retry := tab.Allow("a", l, now)
	if ok {
		t.Fatal("request past burst allowed")
	}
	if retry <= 0 || retry > time.Second {
		t.Errorf("retry = %v, want in (0, 1s]", retry)
	}
	// Another key has its own bucket.
	if ok, _ := tab.Allow("b", l, now); !ok {
		t.Error("independent key denied")
	}
	// After one interval a token is back.
	if ok, _ := tab.Allow("a", l, now.Add(time.Second)); !ok {
		t.Error("no recovery after 1s at 1 rps")
	}
}

func TestUnlimitedKeepsNoState(t *testing.T) {
	tab := NewTable[string](10, time.Minute)
	for i := range 100 {
		if ok, _ := tab.Allow(fmt.Sprint(i), Limit{}, time.Unix(0, 0)); !ok {
			t.Fatal("unlimited denied")
		}
	}
	if got := tab.Len(); got != 0 {
		t.Errorf("Len = %d, want 0", got)
	}
}

func TestTableBounded(t *testing.T) {
	tab := NewTable[int](100, time.Hour)
	now := time.Unix(1000, 0)
	for i := range 10_000 {
		tab.Allow(i, Limit{RPS: 1, Burst: 1}, now.Add(time.Duration(i)*time.Millisecond))
	}
	if got := tab.Len(); got > 100 {
		t.Errorf("Len = %d after 10000 distinct keys, want <= 100", got)
	}
}

func TestIdleEntriesExpire(t *testing.T) {
	tab := NewTable[int](1000, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 50 {
		tab.Allow(i, Limit{RPS: 1, Burst: 1}, now)
	}
	tab.Allow(-1, Limit{RPS: 1, Burst: 1}, now.Add(2*time.Minute))
	if got := tab.Len(); got != 1 {
		t.Errorf("Len = %d after idle sweep, want 1", got)
	}
}

func TestShapeChangeApplies(t *testing.T) {
	tab := NewTable[string](10, time.Minute)
	now := time.Unix(1000, 0)
	tab.Allow("a", Limit{RPS: 1, Burst: 1}, now)
	if ok, _ := tab.Allow("a", Limit{RPS: 1, Burst: 1}, now); ok {
		t.Fatal("second request allowed with burst 1")
	}
	// A reload that raises the limit applies to the existing bucket: at 1000
	// rps a token is due within milliseconds, where 1 rps would need a second.
	raised := Limit{RPS: 1000, Burst: 1000}
	tab.Allow("a", raised, now.Add(time.Millisecond))
	if ok, _ := tab.Allow("a", raised, now.Add(20*time.Millisecond)); !ok {
		t.Error("raised limit not applied")
	}
}

func TestAllowDoesNotAllocateForKnownKey(t *testing.T) {
	tab := NewTable[string](10, time.Minute)
	now := time.Unix(1000, 0)
	l := Limit{RPS: 1e9, Burst: 1 << 30}
	tab.Allow("a", l, now)
	if n := testing.AllocsPerRun(1000, func() { tab.Allow("a", l, now) }); n != 0 {
		t.Errorf("Allow allocates %v per call, want 0", n)
	}
}

// BenchmarkAllowNewKeyFullTable is the flood case: every call is a new key
// and the table is full. It must cost about the same as a small table,
// not a scan of every entry.
func BenchmarkAllowNewKeyFullTable(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 16} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			tab := NewTable[int](size, time.Hour)
			now := time.Unix(1000, 0)
			l := Limit{RPS: 1, Burst: 1}
			for i := range size {
				tab.Allow(i, l, now)
			}
			i := size
			b.ReportAllocs()
			for b.Loop() {
				i++
				tab.Allow(i, l, now)
			}
		})
	}
}

// TestFullTableInsertIsNotAScan counts how many entries a new key's insert
// inspects when the table is full and nothing is idle: a sample, not all.
func TestFullTableInsertIsNotAScan(t *testing.T) {
	tab := NewTable[int](10_000, time.Hour)
	now := time.Unix(1000, 0)
	l := Limit{RPS: 1, Burst: 1}
	for i := range 10_000 {
		tab.Allow(i, l, now)
	}
	// A sweep is not due (an hour idle, swept at start), so inserting
	// must evict exactly one entry per new key and keep the bound.
	for i := range 1000 {
		tab.Allow(20_000+i, l, now.Add(time.Second))
	}
	if got := tab.Len(); got != 10_000 {
		t.Errorf("Len = %d, want 10000", got)
	}
	if tab.lastSweep != now {
		t.Errorf("sweep ran again at %v within idle/4 of the last one at %v", tab.lastSweep, now)
	}
}
