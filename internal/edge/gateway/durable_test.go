package gateway

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// diskLedger is the ledger as the next egressd would read it from disk.
type diskLedger = meter.LedgerState

func readDiskLedger(path string) (diskLedger, error) {
	return meter.ReadLedger(path)
}

// ledgerCalls is how many calls the ledger accounts for: settled or in
// flight.
func ledgerCalls(l diskLedger) (settled, inFlight, reservedNano int64) {
	for _, m := range l.Models {
		settled += m.Requests
	}
	for _, p := range l.InFlight {
		inFlight += p.Calls
		reservedNano += p.ReservedNano
	}
	return settled, inFlight, reservedNano
}

// diskCheck is a fake provider that, on every call it receives, reads the
// ledger file before answering and records a failure unless the file
// accounts for every call the provider has received so far (this one
// included) as settled or in flight. Calls move from in flight to settled
// and are never dropped while the provider answers 200, so this holds at
// every instant if and only if each reservation was durable before its
// forward.
type diskCheck struct {
	path    string
	next    func(http.ResponseWriter, *http.Request, []byte)
	seen    atomic.Int64
	mu      sync.Mutex
	failure error // the first
	failed  int
	// reserved, when set, is compared with the file's reserved amount
	// (only meaningful with one call at a time).
	reserved func() int64
}

func (d *diskCheck) compareReserved(f func() int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reserved = f
}

func (d *diskCheck) handle(w http.ResponseWriter, r *http.Request, body []byte) {
	seen := d.seen.Add(1)
	d.mu.Lock()
	reserved := d.reserved
	d.mu.Unlock()
	l, err := readDiskLedger(d.path)
	if err == nil {
		settled, inFlight, nano := ledgerCalls(l)
		switch {
		case settled+inFlight < seen:
			err = fmt.Errorf("call %d reached the provider while the ledger held %d settled + %d in flight", seen, settled, inFlight)
		case inFlight == 0:
			err = fmt.Errorf("call %d reached the provider with no reservation in flight on disk", seen)
		case reserved != nil && nano != reserved():
			err = fmt.Errorf("call %d: ledger reserves %d nano-USD, the meter %d", seen, nano, reserved())
		}
	}
	if err != nil {
		d.mu.Lock()
		if d.failed++; d.failure == nil {
			d.failure = err
		}
		d.mu.Unlock()
	}
	d.next(w, r, body)
}

func (d *diskCheck) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failure == nil {
		return nil
	}
	return fmt.Errorf("%d of %d calls were not on disk when forwarded; the first: %w", d.failed, d.seen.Load(), d.failure)
}

// TestReservationIsOnDiskBeforeTheProviderSeesTheCall: one call at a time,
// then 50 at once, the provider finds each call's reservation already in
// the ledger file; afterwards the file holds the settled spend and nothing
// in flight.
func TestReservationIsOnDiskBeforeTheProviderSeesTheCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	d := &diskCheck{path: path, next: openRouterJSON(0.001, 40, 100)}
	r := newRig(t, d.handle, withBudget(func(b *policy.BudgetConfig) { b.Ledger = path }))
	d.compareReserved(func() int64 { return int64(math.Round(r.meter.Snapshot().ReservedUSD * 1e9)) })
	for range 3 {
		if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode != 200 {
			t.Fatalf("got %d, want 200", resp.StatusCode)
		}
	}
	if err := d.err(); err != nil {
		t.Fatalf("one at a time: %v", err)
	}
	d.compareReserved(nil) // not comparable while others come and go
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _ := r.chat(sonnetCall); resp != nil && resp.StatusCode != 200 {
				t.Errorf("got %d, want 200", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if err := d.err(); err != nil {
		t.Errorf("50 at once: %v", err)
	}
	waitFor(t, "every call settled", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 53 })
	l, err := readDiskLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	if settled, inFlight, _ := ledgerCalls(l); settled != 53 || inFlight != 0 || l.SpentNano != 53*1_000_000 {
		t.Errorf("ledger at the end: %d settled, %d in flight, %d nano-USD; want 53, 0, %d", settled, inFlight, l.SpentNano, 53*1_000_000)
	}
}

// TestCapRaceWithDurableReservations is the 200-call race against a
// small cap with the provider checking the ledger file on every call:
// spend ends at or under the cap, every refusal is the budget error, and
// every forwarded call was on disk first.
func TestCapRaceWithDurableReservations(t *testing.T) {
	const capUSD = 0.05
	path := filepath.Join(t.TempDir(), "ledger.json")
	d := &diskCheck{path: path, next: openRouterJSON(0.001, 40, 100)}
	r := newRig(t, d.handle, withBudget(func(b *policy.BudgetConfig) { b.Ledger, b.CapUSD = path, capUSD }))
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := r.chat(sonnetCall)
			if resp == nil {
				return
			}
			switch {
			case resp.StatusCode == 200:
				ok.Add(1)
			case resp.StatusCode == 429 && errType(t, body) == "budget_exceeded":
				refused.Add(1)
			default:
				t.Errorf("got %d %s, want 200 or the 429 budget error", resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every call decided", func() bool { return len(r.rec.ByEvent(vocab.EventDecision)) == 200 })
	if err := d.err(); err != nil {
		t.Error(err)
	}
	s := r.meter.Snapshot()
	t.Logf("admitted %d, refused %d, spent $%.4f", ok.Load(), refused.Load(), s.SpentUSD)
	if s.SpentUSD > capUSD || s.ReservedUSD != 0 || ok.Load()+refused.Load() != 200 || ok.Load() == 0 || refused.Load() == 0 {
		t.Errorf("spent %v reserved %v, %d admitted %d refused; want <= %v, 0, and 200 calls split between both",
			s.SpentUSD, s.ReservedUSD, ok.Load(), refused.Load(), capUSD)
	}
	if n := d.seen.Load(); n != ok.Load() {
		t.Errorf("provider saw %d calls, %d were admitted", n, ok.Load())
	}
	if l, err := readDiskLedger(path); err != nil || l.SpentNano != int64(math.Round(s.SpentUSD*1e9)) || len(l.InFlight) != 0 {
		t.Errorf("ledger file: %+v (%v), want spend %v and nothing in flight", l, err, s.SpentUSD)
	}
}

// TestLedgerWriteFailureRefusesAndKeepsSpend: when the ledger cannot be
// written before forwarding, the call is refused with ledger_unavailable
// and never reaches the provider; when it breaks after the forward (the
// settle's write fails), the answered call's spend is kept and later
// calls are refused; after the repair the file holds every answered call.
func TestLedgerWriteFailureRefusesAndKeepsSpend(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 3, 18, 12, 0, 0, 0, time.UTC))
	var breakOnCall atomic.Bool
	fixes := make(chan func(), 1)
	var ledgerPath string
	handle := openRouterJSON(0.1, 1, 1)
	r := newRig(t, func(w http.ResponseWriter, req *http.Request, body []byte) {
		if breakOnCall.CompareAndSwap(true, false) {
			fixes <- breakLedgerDir(t, ledgerPath)
		}
		handle(w, req, body)
	}, withClock(clk), withBudget(func(b *policy.BudgetConfig) {
		b.Ledger = filepath.Join(filepath.Dir(b.Ledger), "state", "ledger.json")
		ledgerPath = b.Ledger
	}))
	call := func() (int, string) {
		resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall)
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			return resp.StatusCode, errType(t, body)
		}
		return 200, ""
	}
	if got, _ := call(); got != 200 {
		t.Fatalf("first call: got %d, want 200", got)
	}
	// Broken before the forward: refused, not forwarded.
	fix := breakLedgerDir(t, ledgerPath)
	if got, typ := call(); got != 503 || typ != "ledger_unavailable" || len(r.fake.requests()) != 1 {
		t.Errorf("reservation write fails: got %d %s, provider calls %d; want 503 ledger_unavailable and still 1", got, typ, len(r.fake.requests()))
	}
	if s := r.meter.Snapshot(); math.Abs(s.SpentUSD-0.1) > 1e-12 || s.ReservedUSD != 0 || s.LedgerErr == nil {
		t.Errorf("spent %v reserved %v ledger err %v, want 0.1, 0 and an error", s.SpentUSD, s.ReservedUSD, s.LedgerErr)
	}
	fix()
	clk.Set(clk.Now().Add(2 * time.Second)) // past the write retry backoff
	if got, _ := call(); got != 200 {
		t.Fatalf("after the repair: got %d, want 200", got)
	}
	// Broken while the provider answers: the settle's write fails.
	breakOnCall.Store(true)
	if got, _ := call(); got != 200 {
		t.Fatalf("call whose settle fails: got %d, want 200 (the provider answered)", got)
	}
	fix = <-fixes
	if got, typ := call(); got != 503 || typ != "ledger_unavailable" || len(r.fake.requests()) != 3 {
		t.Errorf("after the failed settle: got %d %s, provider calls %d; want 503 ledger_unavailable and still 3", got, typ, len(r.fake.requests()))
	}
	if s := r.meter.Snapshot(); math.Abs(s.SpentUSD-0.3) > 1e-12 || s.LedgerErr == nil {
		t.Errorf("spent %v ledger err %v, want 0.3 kept in memory and an error", s.SpentUSD, s.LedgerErr)
	}
	fix()
	clk.Set(clk.Now().Add(2 * time.Second))
	if got, _ := call(); got != 200 {
		t.Fatalf("after the second repair: got %d, want 200", got)
	}
	m2, err := meter.Open(r.budget, meter.Options{Clock: clk.Now, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if s := m2.Snapshot(); math.Abs(s.SpentUSD-0.4) > 1e-12 {
		t.Errorf("ledger on disk: spent %v, want the 4 answered calls' 0.4", s.SpentUSD)
	}
}

// breakLedgerDir replaces the ledger's directory by a regular file, which
// fails writes even for root; the returned func restores an empty one.
func breakLedgerDir(t *testing.T, ledger string) (fix func()) {
	dir := filepath.Dir(ledger)
	if err := os.RemoveAll(dir); err != nil {
		t.Error(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Error(err)
	}
	return func() {
		if err := os.Remove(dir); err != nil {
			t.Error(err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Error(err)
		}
	}
}
