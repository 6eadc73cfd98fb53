package meter

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/google/go-cmp/cmp"
)

// onDisk reads the ledger file as the next Open would.
func onDisk(t *testing.T, path string) ledger {
	t.Helper()
	l, found, _, err := readLedger(path)
	if err != nil || !found {
		t.Fatalf("read ledger %s: found %v, err %v", path, found, err)
	}
	return l
}

// inFlight flattens the ledger's reservations for comparison.
func inFlight(l ledger) map[string]pending {
	out := map[string]pending{}
	for k, v := range l.InFlight {
		out[k] = *v
	}
	return out
}

// TestReservationIsDurableBeforeReserveReturns: the reservation is in the
// file when Reserve returns; Settle replaces it with the cost and Release
// removes it, each written at once.
func TestReservationIsDurableBeforeReserveReturns(t *testing.T) {
	cfg := budget(t, 10)
	m := open(t, cfg, testutil.NewClock(t0))
	r1, err := m.Reserve("Model-A", 0.3)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := m.Reserve("model-a", 0.2)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pending{"model-a": {Calls: 2, ReservedNano: 500_000_000}}
	if diff := cmp.Diff(want, inFlight(onDisk(t, cfg.Ledger))); diff != "" {
		t.Errorf("in flight on disk after two reservations (-want +got):\n%s", diff)
	}
	if _, err := r1.Settle(0.1, Usage{InputTokens: 3}, false); err != nil {
		t.Fatal(err)
	}
	l := onDisk(t, cfg.Ledger)
	want = map[string]pending{"model-a": {Calls: 1, ReservedNano: 200_000_000}}
	if diff := cmp.Diff(want, inFlight(l)); diff != "" || l.SpentNano != 100_000_000 {
		t.Errorf("after a settle: spent %d, want 100000000; in flight (-want +got):\n%s", l.SpentNano, diff)
	}
	r2.Release()
	if l := onDisk(t, cfg.Ledger); len(l.InFlight) != 0 || l.SpentNano != 100_000_000 {
		t.Errorf("after the release: in flight %v spent %d, want none and 100000000", inFlight(l), l.SpentNano)
	}
}

// TestCrashChargesCallsInFlight simulates a crash: a meter is dropped with
// reservations outstanding; the next Open charges each at its reserved
// amount, marks them estimated, logs the count and sum at WARN, clears
// them, and a further Open does not charge them again.
func TestCrashChargesCallsInFlight(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	done, _ := m.Reserve("model-a", 1)
	if _, err := done.Settle(0.1, Usage{InputTokens: 10, OutputTokens: 5}, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		usd   float64
	}{{"model-a", 0.3}, {"model-a", 0.05}, {"model-b", 0.2}} {
		if _, err := m.Reserve(c.model, c.usd); err != nil {
			t.Fatal(err)
		}
	}
	// m is dropped here without settling: egressd was killed.

	var logs testutil.Buffer
	m2, err := Open(cfg, Options{Clock: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s := m2.Snapshot()
	if s.SpentUSD != 0.65 || s.LifetimeUSD != 0.65 || s.ReservedUSD != 0 || s.InFlight != 0 {
		t.Errorf("after the crash: spent %v lifetime %v reserved %v in flight %d, want 0.65 0.65 0 0",
			s.SpentUSD, s.LifetimeUSD, s.ReservedUSD, s.InFlight)
	}
	wantModels := map[string]ModelSpend{
		"model-a": {Requests: 3, InputTokens: 10, OutputTokens: 5, SpentNano: 450_000_000, Estimated: 2},
		"model-b": {Requests: 1, SpentNano: 200_000_000, Estimated: 1},
	}
	if diff := cmp.Diff(wantModels, s.Models); diff != "" {
		t.Errorf("model breakdown (-want +got):\n%s", diff)
	}
	out := logs.String()
	for _, want := range []string{"level=WARN", "calls in flight", "calls=3", "charged_usd=0.55"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if l := onDisk(t, cfg.Ledger); len(l.InFlight) != 0 || l.SpentNano != 650_000_000 {
		t.Errorf("ledger after the recovering Open: in flight %v spent %d, want none and 650000000", inFlight(l), l.SpentNano)
	}
	if s := open(t, cfg, clk).Snapshot(); s.SpentUSD != 0.65 {
		t.Errorf("second Open: spent %v, want 0.65 (charged once)", s.SpentUSD)
	}
}

// TestCrashInFlightAcrossPeriods: calls in flight when egressd died belong
// to the period they were made in; a restart in the next period charges
// them there (and to lifetime), not to the new period.
func TestCrashInFlightAcrossPeriods(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC))
	m := open(t, cfg, clk)
	if _, err := m.Reserve("m", 0.5); err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Date(2026, 4, 1, 0, 1, 0, 0, time.UTC))
	s := open(t, cfg, clk).Snapshot()
	if s.SpentUSD != 0 || s.LifetimeUSD != 0.5 {
		t.Errorf("restart in the next month: spent %v lifetime %v, want 0 and 0.5", s.SpentUSD, s.LifetimeUSD)
	}
}

// TestSettleWriteFailureKeepsTheReservationOnDisk: when the settle's write
// fails, the file still holds the reservation, so a crash then charges
// the reservation (here more than the real cost): an overcharge, never a
// loss.
func TestSettleWriteFailureKeepsTheReservationOnDisk(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r, err := m.Reserve("m", 0.3)
	if err != nil {
		t.Fatal(err)
	}
	m.write = func(batch) error { return errors.New("disk on fire") }
	if _, err := r.Settle(0.1, Usage{}, false); !errors.Is(err, ErrLedgerUnavailable) {
		t.Fatalf("settle with a failing write: got %v, want ErrLedgerUnavailable", err)
	}
	if s := m.Snapshot(); s.SpentUSD != 0.1 || s.LedgerErr == nil {
		t.Errorf("in memory: spent %v ledger err %v, want 0.1 and an error", s.SpentUSD, s.LedgerErr)
	}
	if s := open(t, cfg, clk).Snapshot(); s.SpentUSD != 0.3 {
		t.Errorf("after a crash: spent %v, want the reservation's 0.3", s.SpentUSD)
	}
}

// TestReserveRefusedWhenItsWriteFails: a reservation that cannot be
// written is refused with ErrLedgerUnavailable and leaves nothing
// reserved; later reservations are refused without touching the disk
// until the retry backoff has passed, and the first after it that writes
// is admitted and on disk.
func TestReserveRefusedWhenItsWriteFails(t *testing.T) {
	cfg := budget(t, 10)
	cfg.Ledger = filepath.Join(t.TempDir(), "state", "ledger.json")
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	writes := 0
	m.write = func(b batch) error { writes++; return m.jour.store(b) }
	fix := breakDir(t, cfg.Ledger)
	if _, err := m.Reserve("m", 0.1); !errors.Is(err, ErrLedgerUnavailable) {
		t.Fatalf("reserve with a broken ledger dir: got %v, want ErrLedgerUnavailable", err)
	}
	if s := m.Snapshot(); s.ReservedUSD != 0 || s.InFlight != 0 || s.LedgerErr == nil {
		t.Errorf("after the refused reservation: reserved %v in flight %d ledger err %v, want 0 0 and an error",
			s.ReservedUSD, s.InFlight, s.LedgerErr)
	}
	fix()
	if _, err := m.Reserve("m", 0.1); !errors.Is(err, ErrLedgerUnavailable) || writes != 1 {
		t.Errorf("reserve within the backoff: got %v after %d writes, want ErrLedgerUnavailable after 1", err, writes)
	}
	clk.Advance(writeRetryBackoff)
	if _, err := m.Reserve("m", 0.1); err != nil {
		t.Fatalf("reserve after the backoff with the dir fixed: %v", err)
	}
	if got := inFlight(onDisk(t, cfg.Ledger)); got["m"].Calls != 1 || writes != 2 {
		t.Errorf("on disk %v after %d writes, want one call in flight after 2", got, writes)
	}
}

// TestConcurrentReservationsShareAWrite: while one ledger write is in
// progress, reservations that arrive wait for the next write, and all of
// them share it: n reservations cost two writes, not n.
func TestConcurrentReservationsShareAWrite(t *testing.T) {
	const n = 20
	cfg := budget(t, 10)
	m := open(t, cfg, testutil.NewClock(t0))
	var mu sync.Mutex
	var written []int // calls in flight in each write
	entered, release := make(chan struct{}, 1), make(chan struct{})
	m.write = func(b batch) error {
		mu.Lock()
		first := len(written) == 0
		written = append(written, int(batchLedger(t, b).InFlight["m"].Calls))
		mu.Unlock()
		if first {
			entered <- struct{}{}
			<-release
		}
		return m.jour.store(b)
	}
	var wg sync.WaitGroup
	reserve := func() {
		defer wg.Done()
		if _, err := m.Reserve("m", 0.01); err != nil {
			t.Error(err)
		}
	}
	wg.Add(1)
	go reserve()
	<-entered // the first write holds the writer
	for range n - 1 {
		wg.Add(1)
		go reserve()
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.Snapshot().InFlight < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d reservations made", m.Snapshot().InFlight, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if diff := cmp.Diff([]int{1, n}, written); diff != "" {
		t.Errorf("calls in flight per write (-want +got):\n%s", diff)
	}
	if got := inFlight(onDisk(t, cfg.Ledger))["m"].Calls; got != n {
		t.Errorf("on disk: %d calls in flight, want %d", got, n)
	}
}

// TestStaleTempFilesRemovedAtOpen: Open removes the temporary files a
// killed write leaves, and nothing else.
func TestStaleTempFilesRemovedAtOpen(t *testing.T) {
	cfg := budget(t, 10)
	dir := filepath.Dir(cfg.Ledger)
	names := map[string]bool{ // name -> removed
		".ledger.json.123456789.tmp": true,
		".ledger.json.1.tmp":         true,
		".ledger.json.tmp":           false,
		".ledger.json..tmp":          false,
		".ledger.json.12a.tmp":       false,
		".other.json.123.tmp":        false,
		"ledger.json.123.tmp":        false,
		".ledger.json.123.tmp.keep":  false,
	}
	for name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	open(t, cfg, testutil.NewClock(t0))
	for name, removed := range names {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone := errors.Is(err, os.ErrNotExist); gone != removed {
			t.Errorf("%s: removed %v, want %v", name, gone, removed)
		}
	}
}

// TestReconfigureChargesCallsInFlightAtTheNewPath: a ledger adopted by a
// path change is recovered like one opened at start.
func TestReconfigureChargesCallsInFlightAtTheNewPath(t *testing.T) {
	old, other := budget(t, 10), budget(t, 10)
	clk := testutil.NewClock(t0)
	crashed := open(t, other, clk)
	if _, err := crashed.Reserve("m", 0.4); err != nil {
		t.Fatal(err)
	}
	m := open(t, old, clk)
	r, _ := m.Reserve("m", 0.1)
	if err := m.Reconfigure(other); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s.SpentUSD != 0.4 || s.InFlight != 1 {
		t.Errorf("after adopting a ledger with a call in flight: spent %v in flight %d, want 0.4 and our own 1", s.SpentUSD, s.InFlight)
	}
	if got := inFlight(onDisk(t, other.Ledger)); got["m"] != (pending{Calls: 1, ReservedNano: 100_000_000}) {
		t.Errorf("new ledger in flight: got %v, want only our own reservation", got)
	}
	r.Release()
}
