package meter

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/policy"
	"github.com/google/go-cmp/cmp"
)

// batchLedger is what a write carries: the snapshot, or the entries of
// its journal record applied to an empty ledger.
func batchLedger(t testing.TB, b batch) ledger {
	t.Helper()
	if b.full {
		return b.snap
	}
	r, err := decodeRecord(bytes.TrimSuffix(b.rec, []byte{'\n'}))
	if err != nil {
		t.Fatalf("batch record %q: %v", b.rec, err)
	}
	var l ledger
	l.apply(r)
	return l
}

// crashFiles are a ledger's snapshot and journal as a crash left them;
// nil means the file did not exist.
type crashFiles struct{ Snap, Jour []byte }

func capture(t testing.TB, path string) crashFiles {
	t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			b = []byte{}
		}
		return b
	}
	return crashFiles{read(path), read(journalPath(path))}
}

// restore lays the files out in a fresh directory and returns a budget
// config whose ledger they are.
func restore(t testing.TB, f crashFiles) policy.BudgetConfig {
	t.Helper()
	cfg := budget(t, 1e6)
	for p, b := range map[string][]byte{cfg.Ledger: f.Snap, journalPath(cfg.Ledger): f.Jour} {
		if b == nil {
			continue
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if l, found, err := readSnapshot(cfg.Ledger); err == nil && found {
		cfg.Period = l.Period // as configured when the files were written
	}
	return cfg
}

// spendView is the part of a ledger a restart must get right.
type spendView struct {
	Spent, Lifetime int64
	Warned          bool
	Updated         time.Time
	Models          map[string]ModelSpend
	InFlight        map[string]pending
}

func viewOf(l ledger) spendView {
	v := spendView{Spent: l.SpentNano, Lifetime: l.LifetimeNano, Warned: l.Warned, Updated: l.Updated,
		Models: map[string]ModelSpend{}, InFlight: inFlight(l)}
	for k, ms := range l.Models {
		v.Models[k] = *ms
	}
	return v
}

// afterCrash is what a restart must find if egressd died now: m's state
// with its calls in flight charged in full.
func afterCrash(m *Meter) spendView {
	m.mu.Lock()
	l := m.led.clone()
	m.mu.Unlock()
	l.chargeInFlight()
	return viewOf(l)
}

// reopened opens a meter on the crash files and returns its state.
func reopened(t testing.TB, f crashFiles, clk *testutil.Clock) spendView {
	t.Helper()
	m := open(t, restore(t, f), clk)
	m.mu.Lock()
	defer m.mu.Unlock()
	return viewOf(m.led)
}

// reread is reopened without the writes Open makes: the ledger as read
// from the crash files, with its calls in flight charged. For tests that
// restart hundreds of times within one period.
func reread(t testing.TB, f crashFiles) spendView {
	t.Helper()
	l, _, _, err := readLedger(restore(t, f).Ledger)
	if err != nil {
		t.Fatal(err)
	}
	l.chargeInFlight()
	return viewOf(l)
}

// TestJournalCrashAfterAnyOperation runs a long random mix of
// reservations, settles and releases across models and daily periods,
// with the journal compacted every few records, and after each operation
// restarts from a copy of the files: the restart must find exactly the
// spend, with every call in flight charged.
func TestJournalCrashAfterAnyOperation(t *testing.T) {
	cfg := budget(t, 1e6)
	cfg.Period = PeriodDay
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	m.jour.limit = 2 << 10
	var records, snapshots int
	m.write = func(b batch) error {
		if b.full {
			snapshots++
		} else {
			records++
		}
		return m.jour.store(b)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var open []*Reservation
	for i := range 250 {
		switch op := rng.IntN(10); {
		case op < 5 || len(open) == 0:
			// Time passes only before operations that look at the
			// period: a restart must roll over where the meter did.
			clk.Advance(time.Duration(rng.IntN(150)) * time.Minute)
			r, err := m.Reserve(fmt.Sprintf("model-%d", rng.IntN(4)), float64(rng.IntN(1000))/1000)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, r)
		case op < 9:
			clk.Advance(time.Duration(rng.IntN(150)) * time.Minute)
			k := rng.IntN(len(open))
			u := Usage{InputTokens: rng.Int64N(1000), OutputTokens: rng.Int64N(1000)}
			if _, err := open[k].Settle(float64(rng.IntN(1000))/1000, u, rng.IntN(2) == 0); err != nil {
				t.Fatal(err)
			}
			open = slices.Delete(open, k, k+1)
		default:
			k := rng.IntN(len(open))
			open[k].Release()
			open = slices.Delete(open, k, k+1)
		}
		if diff := cmp.Diff(afterCrash(m), reopened(t, capture(t, cfg.Ledger), clk)); diff != "" {
			t.Fatalf("restart after operation %d (-want +got):\n%s", i, diff)
		}
	}
	if records < 200 || snapshots < 5 {
		t.Errorf("%d records and %d snapshots written, want the journal used and compacted", records, snapshots)
	}
}

// holdRecord makes m's next journal record be captured instead of
// written, as a crash before its append would leave it; it returns the
// files before the record and a function giving the record.
func holdRecord(t *testing.T, m *Meter, path string) (before crashFiles, rec func() []byte) {
	t.Helper()
	var held []byte
	before = capture(t, path)
	m.write = func(b batch) error {
		if b.full {
			t.Fatal("a snapshot where a record was expected")
		}
		held = b.rec
		return m.jour.store(b)
	}
	return before, func() []byte { return held }
}

// TestJournalTornRecordAtEveryByte: a crash can cut the record being
// appended anywhere. Any prefix of it is ignored (the state before it: a
// reservation not yet acknowledged is not charged, a settle not yet
// acknowledged leaves the reservation to be charged); once its JSON and
// checksum are whole it is applied.
func TestJournalTornRecordAtEveryByte(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r1, _ := m.Reserve("a", 0.5)
	r1.Settle(0.25, Usage{InputTokens: 3}, false)
	r2, _ := m.Reserve("b", 0.5)
	for _, step := range []struct {
		name string
		do   func()
	}{
		{"reserve", func() {
			if _, err := m.Reserve("a", 0.125); err != nil {
				t.Fatal(err)
			}
		}},
		{"settle", func() {
			if _, err := r2.Settle(0.0625, Usage{OutputTokens: 9}, true); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		want0 := afterCrash(m)
		before, rec := holdRecord(t, m, cfg.Ledger)
		step.do()
		want1 := afterCrash(m)
		r := rec()
		for k := 0; k <= len(r); k++ {
			f := crashFiles{before.Snap, append(slices.Clip(before.Jour), r[:k]...)}
			want := want0
			if k >= len(r)-1 {
				want = want1
			}
			if diff := cmp.Diff(want, reread(t, f)); diff != "" {
				t.Fatalf("%s record cut at %d of %d bytes (-want +got):\n%s", step.name, k, len(r), diff)
			}
		}
	}
}

// TestJournalAcrossCompaction: a crash at each step of a compaction
// finds the same state: before the new snapshot is renamed into place
// (old snapshot, old journal, a stale temporary file), after it but
// before the journal is emptied (new snapshot, old journal, whose records
// the snapshot holds and replay skips), and after.
func TestJournalAcrossCompaction(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	for i := range 5 {
		r, _ := m.Reserve("m", 0.25)
		if i%2 == 0 {
			r.Settle(0.125, Usage{InputTokens: int64(i)}, false)
		}
	}
	old := capture(t, cfg.Ledger)
	want := afterCrash(m)
	if err := m.Reconfigure(cfg); err != nil { // always a snapshot
		t.Fatal(err)
	}
	now := capture(t, cfg.Ledger)
	if len(old.Jour) == 0 || len(now.Jour) != 0 {
		t.Fatalf("journal %d bytes before the compaction and %d after, want some and none", len(old.Jour), len(now.Jour))
	}
	for name, f := range map[string]crashFiles{
		"before the rename":        old,
		"before the journal reset": {now.Snap, old.Jour},
		"after":                    now,
	} {
		if diff := cmp.Diff(want, reopened(t, f, clk)); diff != "" {
			t.Errorf("crash %s (-want +got):\n%s", name, diff)
		}
	}
	// Records appended after the compaction follow the new snapshot.
	r, _ := m.Reserve("m", 0.5)
	r.Settle(0.375, Usage{}, false)
	if diff := cmp.Diff(afterCrash(m), reopened(t, capture(t, cfg.Ledger), clk)); diff != "" {
		t.Errorf("records after the compaction (-want +got):\n%s", diff)
	}
}

// TestJournalFailedAppendFailsClosedAndLosesNothing: an append that
// fails part-way (a full disk) refuses its reservation, leaves a torn
// tail that a crash then ignores, and makes the next write a snapshot,
// so no record is ever appended after the torn one.
func TestJournalFailedAppendFailsClosedAndLosesNothing(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r, _ := m.Reserve("m", 0.5)
	want := afterCrash(m)
	var kinds []bool
	m.write = func(b batch) error {
		kinds = append(kinds, b.full)
		if len(kinds) == 1 {
			m.jour.f.Write(b.rec[:len(b.rec)/2])
			m.jour.broken = true
			return errors.New("no space left on device")
		}
		return m.jour.store(b)
	}
	if _, err := m.Reserve("m", 0.25); !errors.Is(err, ErrLedgerUnavailable) {
		t.Fatalf("reserve whose append failed: got %v, want ErrLedgerUnavailable", err)
	}
	if diff := cmp.Diff(want, reopened(t, capture(t, cfg.Ledger), clk)); diff != "" {
		t.Errorf("crash after the failed append (-want +got):\n%s", diff)
	}
	clk.Advance(writeRetryBackoff)
	if _, err := r.Settle(0.125, Usage{}, false); err != nil {
		t.Fatal(err)
	}
	r3, err := m.Reserve("m", 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]bool{false, true, false}, kinds); diff != "" {
		t.Errorf("writes (true: snapshot) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(afterCrash(m), reopened(t, capture(t, cfg.Ledger), clk)); diff != "" {
		t.Errorf("crash after recovering (-want +got):\n%s", diff)
	}
	r3.Release()
}

// TestJournalFileRemovedUnderTheMeter: a record appended to a journal
// (or after a snapshot) that was removed while open would be lost at the
// next restart, so it is not acknowledged; the next write recreates both
// files.
func TestJournalFileRemovedUnderTheMeter(t *testing.T) {
	for _, victim := range []string{"journal", "snapshot"} {
		t.Run(victim, func(t *testing.T) {
			cfg := budget(t, 10)
			clk := testutil.NewClock(t0)
			m := open(t, cfg, clk)
			r, _ := m.Reserve("m", 0.5)
			p := cfg.Ledger
			if victim == "journal" {
				p = journalPath(p)
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Settle(0.25, Usage{}, false); !errors.Is(err, ErrLedgerUnavailable) {
				t.Fatalf("settle into a removed file: got %v, want ErrLedgerUnavailable", err)
			}
			clk.Advance(writeRetryBackoff)
			r2, err := m.Reserve("m", 0.125)
			if err != nil {
				t.Fatalf("reserve after the backoff: %v", err)
			}
			if diff := cmp.Diff(afterCrash(m), reopened(t, capture(t, cfg.Ledger), clk)); diff != "" {
				t.Errorf("restart after the files were recreated (-want +got):\n%s", diff)
			}
			r2.Release()
		})
	}
}

// TestJournalDamageFailsClosed: damage a crash cannot cause is an error
// naming the ledger, and Open leaves the files as they were for the
// operator; a bad last line is a torn append, ignored with a warning.
func TestJournalDamageFailsClosed(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	for range 3 {
		r, _ := m.Reserve("m", 0.5)
		r.Settle(0.25, Usage{}, false)
	}
	good := capture(t, cfg.Ledger)
	lines := bytes.SplitAfter(good.Jour, []byte{'\n'})
	lines = lines[:len(lines)-1] // the empty piece after the last newline
	if len(lines) != 6 {
		t.Fatalf("%d journal lines, want 6", len(lines))
	}
	flip := func(line []byte) []byte {
		b := slices.Clone(line)
		b[len(b)/2] ^= 0x20
		return b
	}
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
	tests := []struct {
		name     string
		f        crashFiles
		wantErr  bool
		wantWarn bool
	}{
		{"flipped byte mid-journal", crashFiles{good.Snap, join(lines[0], flip(lines[1]), join(lines[2:]...))}, true, false},
		{"missing record", crashFiles{good.Snap, join(lines[0], join(lines[2:]...))}, true, false},
		{"repeated record", crashFiles{good.Snap, join(lines[0], lines[0], join(lines[1:]...))}, true, false},
		{"garbage line mid-journal", crashFiles{good.Snap, join(lines[0], []byte("hello\n"), join(lines[1:]...))}, true, false},
		{"journal without its snapshot", crashFiles{nil, good.Jour}, true, false},
		{"journal of an older snapshot", crashFiles{good.Snap, join(lines[1:]...)}, true, false},
		{"flipped byte in the last line", crashFiles{good.Snap, join(join(lines[:5]...), flip(lines[5]))}, false, true},
		{"half a line at the end", crashFiles{good.Snap, join(good.Jour, lines[0][:10])}, false, true},
		{"empty journal without a snapshot", crashFiles{nil, []byte{}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := restore(t, tt.f)
			var logs testutil.Buffer
			_, err := Open(c, Options{Clock: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if got := err != nil; got != tt.wantErr || (got && !errors.Is(err, ErrLedgerCorrupt)) {
				t.Fatalf("Open: got %v, want an ErrLedgerCorrupt error: %v", err, tt.wantErr)
			}
			if got := strings.Contains(logs.String(), "torn record"); got != tt.wantWarn {
				t.Errorf("torn-record warning logged %v, want %v: %s", got, tt.wantWarn, logs.String())
			}
			if tt.wantErr {
				if diff := cmp.Diff(tt.f, capture(t, c.Ledger)); diff != "" {
					t.Errorf("files changed by a refused Open (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestVersion1LedgerIsRead: a ledger written before the journal existed
// is read as a snapshot and carried on.
func TestVersion1LedgerIsRead(t *testing.T) {
	cfg := budget(t, 10)
	v1 := `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":500000000,` +
		`"lifetime_nano_usd":700000000,"warned":false,"updated":"2026-03-10T00:00:00Z",` +
		`"in_flight":{"m":{"calls":1,"reserved_nano_usd":100000000}}}`
	if err := os.WriteFile(cfg.Ledger, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := testutil.NewClock(t0)
	if s := open(t, cfg, clk).Snapshot(); s.SpentUSD != 0.6 || s.LifetimeUSD != 0.8 {
		t.Errorf("from a version-1 ledger: spent %v lifetime %v, want 0.6 and 0.8", s.SpentUSD, s.LifetimeUSD)
	}
	if l := onDisk(t, cfg.Ledger); l.Version != ledgerVersion {
		t.Errorf("rewritten as version %d, want %d", l.Version, ledgerVersion)
	}
}

// FuzzJournalReplay: replaying any bytes after a real journal never
// panics, and whatever it accepts is a valid ledger; a real journal with
// any prefix of a further record replays like the journal alone or like
// the journal with the whole record.
func FuzzJournalReplay(f *testing.F) {
	base, recs := fuzzJournal(f)
	f.Add([]byte(nil), uint16(0))
	f.Add(recs[len(recs)-1], uint16(40))
	f.Add([]byte("00000000 {}\n"), uint16(3))
	f.Fuzz(func(t *testing.T, tail []byte, cut uint16) {
		head := bytes.Join(recs[:len(recs)-1], nil)
		l := base.clone()
		if _, _, err := replay(&l, append(slices.Clip(head), tail...)); err == nil {
			_ = l.check() // may fail (replay leaves that to readLedger); must not panic
		}
		last := recs[len(recs)-1]
		k := int(cut) % (len(last) + 1)
		got, whole, alone := base.clone(), base.clone(), base.clone()
		if _, _, err := replay(&got, append(slices.Clip(head), last[:k]...)); err != nil {
			t.Fatalf("cut at %d: %v", k, err)
		}
		replay(&whole, bytes.Join(recs, nil))
		replay(&alone, head)
		if g := viewOf(got); !cmp.Equal(g, viewOf(whole)) && !cmp.Equal(g, viewOf(alone)) {
			t.Fatalf("cut at %d: neither the journal alone nor with the record", k)
		}
	})
}

// fuzzJournal is a real snapshot and the records written after it.
func fuzzJournal(f *testing.F) (ledger, [][]byte) {
	cfg := budget(f, 10)
	m, err := Open(cfg, Options{Clock: testutil.NewClock(t0).Now, Logger: quietLog})
	if err != nil {
		f.Fatal(err)
	}
	snap, _, err := readSnapshot(cfg.Ledger)
	if err != nil {
		f.Fatal(err)
	}
	var recs [][]byte
	m.write = func(b batch) error { recs = append(recs, b.rec); return m.jour.store(b) }
	r, _ := m.Reserve("a", 0.5)
	r2, _ := m.Reserve("b", 0.25)
	r.Settle(0.125, Usage{InputTokens: 4, OutputTokens: 2}, false)
	r2.Release()
	return snap, recs
}

// TestReadLedgerSeesTheJournal: ReadLedger reads what Open would, the
// journal included, and writes nothing.
func TestReadLedgerSeesTheJournal(t *testing.T) {
	cfg := budget(t, 10)
	m := open(t, cfg, testutil.NewClock(t0))
	r, _ := m.Reserve("m", 0.5)
	r.Settle(0.25, Usage{InputTokens: 2}, false)
	m.Reserve("m", 0.125)
	files := capture(t, cfg.Ledger)
	got, err := ReadLedger(cfg.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	if got.SpentUSD != 0.25 || got.Models["m"].Requests != 1 || got.InFlight["m"] != (Pending{1, 125_000_000}) {
		t.Errorf("got %+v, want 0.25 spent by 1 request and 1 call in flight", got)
	}
	if diff := cmp.Diff(files, capture(t, cfg.Ledger)); diff != "" {
		t.Errorf("ReadLedger changed the files (-before +after):\n%s", diff)
	}
	if _, err := ReadLedger(cfg.Ledger + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing ledger: got %v, want os.ErrNotExist", err)
	}
}

// TestCloseFoldsTheJournal: after Close the snapshot alone holds every
// settle and the journal is empty; a call settled after Close is still
// written.
func TestCloseFoldsTheJournal(t *testing.T) {
	cfg := budget(t, 10)
	m := open(t, cfg, testutil.NewClock(t0))
	for range 3 {
		r, err := m.Reserve("m", 0.5)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Settle(0.25, Usage{InputTokens: 1}, false); err != nil {
			t.Fatal(err)
		}
	}
	late, err := m.Reserve("m", 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	snap, found, err := readSnapshot(cfg.Ledger)
	if err != nil || !found {
		t.Fatalf("read snapshot: found %v, err %v", found, err)
	}
	if got, want := snap.SpentNano, toNano(0.75, false); got != want {
		t.Errorf("snapshot alone after Close: spent %d, want %d", got, want)
	}
	if got := len(inFlight(snap)); got != 1 {
		t.Errorf("snapshot alone after Close: %d reservations in flight, want 1", got)
	}
	if j, err := readJournal(cfg.Ledger); err != nil || len(j) != 0 {
		t.Errorf("journal after Close: %q, %v; want empty", j, err)
	}
	if _, err := late.Settle(0.25, Usage{InputTokens: 1}, false); err != nil {
		t.Fatalf("settle after Close: %v", err)
	}
	if got, want := onDisk(t, cfg.Ledger).SpentNano, toNano(1, false); got != want {
		t.Errorf("ledger after a settle following Close: spent %d, want %d", got, want)
	}
}
