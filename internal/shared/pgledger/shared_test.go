package pgledger_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openMeter opens a meter on the shared store at dsn, closed at the end
// of t.
func openMeter(t *testing.T, dsn string, cfg policy.BudgetConfig, opt meter.Options) *meter.Meter {
	t.Helper()
	opt.Env = func(k string) string {
		if k == dsnEnv {
			return dsn
		}
		return ""
	}
	if opt.Logger == nil {
		opt.Logger = quiet
	}
	if opt.StoreTimeout == 0 {
		opt.StoreTimeout = 20 * time.Second
	}
	m, err := meter.Open(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestThreeProcessesOneCap races 3 egressd processes × 200 concurrent
// calls (reserve $0.01, cost $0.007) against one $1 cap: the spend ends at
// or under the cap, every refusal is a budget refusal, and every call
// that went through is charged exactly.
func TestThreeProcessesOneCap(t *testing.T) {
	const procs, calls, capUSD = 3, 200, 1.0
	dsn := freshDB(t)
	hs := make([]*helperProc, procs)
	for i := range hs {
		hs[i] = startHelper(t, "race", dsn, "HELPER_BUDGET=hermes", fmt.Sprintf("HELPER_CAP=%v", capUSD),
			fmt.Sprintf("HELPER_CALLS=%d", calls), "HELPER_LEASE=30s")
	}
	for _, h := range hs {
		h.expect(t, "ready")
	}
	for _, h := range hs {
		if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	var total helperResult
	for i, h := range hs {
		var r helperResult
		if err := json.NewDecoder(h.out).Decode(&r); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
		if r.Other != 0 {
			t.Errorf("helper %d: %d calls failed other than by the budget: %q", i, r.Other, r.Errors)
		}
		total.OK, total.Budget, total.Other = total.OK+r.OK, total.Budget+r.Budget, total.Other+r.Other
	}
	if got, want := total.OK+total.Budget+total.Other, procs*calls; got != want {
		t.Errorf("calls accounted: got %d, want %d", got, want)
	}
	// Each refusal saw spent + reserved + 0.01 > 1, and each 0.007 spent
	// or 0.01 reserved is a call that went through: at least 100 did.
	if total.OK < 100 || total.Budget == 0 {
		t.Errorf("got %d through and %d refused; want at least 100 through and some refused", total.OK, total.Budget)
	}
	s := openMeter(t, dsn, pgBudget("hermes", capUSD, "", 0), meter.Options{}).Snapshot()
	wantSpent := float64(total.OK) * 7_000_000 / 1e9
	if s.SpentUSD > capUSD || s.SpentUSD != wantSpent || s.ReservedUSD != 0 || s.LedgerErr != nil {
		t.Errorf("store: got spent $%v reserved $%v err %v; want $%v (≤ cap $%v), nothing reserved",
			s.SpentUSD, s.ReservedUSD, s.LedgerErr, wantSpent, capUSD)
	}
	t.Logf("%d of %d calls through, spent $%.3f of $%.2f", total.OK, procs*calls, s.SpentUSD, capUSD)
}

// TestAgentsUnderSharedCap: two agents' budgets under one shared cap; a
// call is refused by whichever would cross, and both limits hold.
func TestAgentsUnderSharedCap(t *testing.T) {
	dsn := freshDB(t)
	a := openMeter(t, dsn, pgBudget("agent-a", 0.5, "team", 0.6), meter.Options{})
	b := openMeter(t, dsn, pgBudget("agent-b", 0.5, "team", 0.6), meter.Options{})
	steps := []struct {
		m         *meter.Meter
		usd       float64
		refusedBy string // "" = admitted
	}{
		{a, 0.4, ""},
		{a, 0.2, "agent-a"}, // 0.6 > a's 0.5
		{b, 0.3, "team"},    // b has room, the team does not: 0.4 + 0.3 > 0.6
		{b, 0.2, ""},
		{b, 0.01, "team"},
	}
	for i, st := range steps {
		r, err := st.m.Reserve("gpt-4o-mini", st.usd)
		var be *meter.BudgetError
		switch {
		case st.refusedBy == "" && err != nil:
			t.Fatalf("step %d: Reserve($%v): %v, want admitted", i, st.usd, err)
		case st.refusedBy == "":
			if _, err := r.Settle(st.usd, meter.Usage{}, false); err != nil {
				t.Fatal(err)
			}
		case !errors.As(err, &be) || be.Budget != st.refusedBy:
			t.Fatalf("step %d: Reserve($%v): got %v, want refused by %s", i, st.usd, err, st.refusedBy)
		}
	}
	sa, sb := a.Snapshot(), b.Snapshot()
	if sa.SpentUSD != 0.4 || sb.SpentUSD != 0.2 || sa.Shared == nil || sa.Shared.SpentUSD != 0.6 || sa.Shared.CapUSD != 0.6 {
		t.Errorf("got a $%v, b $%v, team %+v; want 0.4, 0.2, team 0.6 of 0.6", sa.SpentUSD, sb.SpentUSD, sa.Shared)
	}
}

// TestAgentsUnderSharedCapConcurrent races both agents: neither passes its
// own cap, the team never passes its cap, and the team's spend is theirs.
func TestAgentsUnderSharedCapConcurrent(t *testing.T) {
	dsn := freshDB(t)
	a := openMeter(t, dsn, pgBudget("agent-a", 0.5, "team", 0.7), meter.Options{})
	b := openMeter(t, dsn, pgBudget("agent-b", 0.5, "team", 0.7), meter.Options{})
	done := make(chan helperResult, 2)
	for _, m := range []*meter.Meter{a, b} {
		go func() { done <- race(m, 100, 0.01, 0.01) }()
	}
	for range 2 {
		if r := <-done; r.Other != 0 {
			t.Errorf("%d calls failed other than by the budget: %q", r.Other, r.Errors)
		}
	}
	sa, sb := a.Snapshot(), b.Snapshot()
	if sa.SpentUSD > 0.5 || sb.SpentUSD > 0.5 || sa.Shared.SpentUSD > 0.7 {
		t.Errorf("caps crossed: a $%v, b $%v (caps 0.5), team $%v (cap 0.7)", sa.SpentUSD, sb.SpentUSD, sa.Shared.SpentUSD)
	}
	if got, want := toNano(sa.Shared.SpentUSD), toNano(sa.SpentUSD)+toNano(sb.SpentUSD); got != want || got != toNano(0.7) {
		t.Errorf("team spent %d nano-USD, want a+b = %d = the team cap %d", got, want, toNano(0.7))
	}
}

func toNano(usd float64) int64 { return int64(usd*1e9 + 0.5) }

// TestKilledInstanceChargedOnceAfterLease SIGKILLs an instance holding a
// reservation: the reservation stays reserved until its lease runs out,
// then one of the live instances charges it in full, once.
func TestKilledInstanceChargedOnceAfterLease(t *testing.T) {
	const lease = 2 * time.Second
	dsn := freshDB(t)
	live := openMeter(t, dsn, pgBudget("hermes", 1, "", 0), meter.Options{Lease: lease})
	h := startHelper(t, "hold", dsn, "HELPER_BUDGET=hermes", "HELPER_CAP=1", "HELPER_LEASE="+lease.String())
	h.expect(t, "reserved")
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
	killed := time.Now()
	if s := live.Snapshot(); s.SpentUSD != 0 || s.ReservedUSD != 0.05 || s.InFlight != 1 {
		t.Fatalf("just after the kill: got spent $%v reserved $%v in flight %d; want 0, 0.05, 1 (lease still running)",
			s.SpentUSD, s.ReservedUSD, s.InFlight)
	}
	var s meter.Snapshot
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if s = live.Snapshot(); s.SpentUSD != 0 {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling for the live instance's sweep
	}
	charged := time.Since(killed)
	if s.SpentUSD != 0.05 || s.ReservedUSD != 0 || s.InFlight != 0 || s.Models["held-model"].Estimated != 1 {
		t.Fatalf("after the lease: got %+v; want $0.05 spent as one estimated call, nothing reserved", s)
	}
	// The lease was set when the helper reserved, just before the kill.
	if charged < lease/2 {
		t.Errorf("charged %v after the kill, before the lease of %v could have run out", charged, lease)
	}
	other, err := pgledger.Open(pgledger.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n, _, err := other.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("another sweep: charged %d, %v; want 0", n, err)
	}
	if s := live.Snapshot(); s.SpentUSD != 0.05 {
		t.Errorf("spent after another sweep: $%v, want $0.05 (charged once)", s.SpentUSD)
	}
	t.Logf("charged %v after SIGKILL (lease %v)", charged, lease)
}

// TestReconfigureCap: a reload changes the caps on the shared store at
// once, keeps the budget names, and writes no ledger file.
func TestReconfigureCap(t *testing.T) {
	dsn := freshDB(t)
	cfg := pgBudget("hermes", 0.1, "team", 0.1)
	cfg.Ledger = filepath.Join(t.TempDir(), "ledger.json")
	m := openMeter(t, dsn, cfg, meter.Options{})
	var be *meter.BudgetError
	if _, err := m.Reserve("gpt-4o-mini", 0.2); !errors.As(err, &be) || be.Budget != "hermes" {
		t.Fatalf("before: got %v, want refused by hermes", err)
	}
	cfg.CapUSD, cfg.Shared.CapUSD = 1, 0.15
	cfg.Name = "renamed" // restart-only: ignored until then
	if err := m.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reserve("gpt-4o-mini", 0.2); !errors.As(err, &be) || be.Budget != "team" {
		t.Fatalf("after raising hermes only: got %v, want refused by team", err)
	}
	if _, err := m.Reserve("gpt-4o-mini", 0.15); err != nil {
		t.Fatalf("within both new caps: %v", err)
	}
	if s := m.Snapshot(); s.Budget != "hermes" || s.CapUSD != 1 || s.Shared.CapUSD != 0.15 {
		t.Errorf("snapshot: got budget %q cap %v shared %+v; want hermes, 1, team 0.15", s.Budget, s.CapUSD, s.Shared)
	}
	if _, err := os.Stat(cfg.Ledger); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ledger file: %v, want none written", err)
	}
}

// TestLeastPrivilegeUser runs the README's SQL for egressd's database user
// and serves a call as that user: it can create its tables and keep the
// ledger with nothing more.
func TestLeastPrivilegeUser(t *testing.T) {
	db := fmt.Sprintf("lp%d", dbSeq.Add(1))
	role := db + "_egressd"
	for _, stmt := range []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD 'change-me' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION CONNECTION LIMIT 40`,
		`CREATE DATABASE ` + db + ` OWNER ` + role,
	} {
		if err := cluster.Exec("postgres", stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, stmt := range []string{
		`REVOKE ALL ON SCHEMA public FROM PUBLIC`,
		`GRANT USAGE, CREATE ON SCHEMA public TO ` + role,
	} {
		if err := cluster.Exec(db, stmt); err != nil {
			t.Fatal(err)
		}
	}
	dsn := fmt.Sprintf("postgres://%s:change-me@127.0.0.1:%d/%s?sslmode=disable", role, cluster.Port, db)
	m := openMeter(t, dsn, pgBudget("hermes", 1, "team", 2), meter.Options{})
	r, err := m.Reserve("gpt-4o-mini", 0.1)
	if err != nil {
		t.Fatalf("Reserve as %s: %v", role, err)
	}
	if _, err := r.Settle(0.05, meter.Usage{}, false); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s.SpentUSD != 0.05 || s.Shared.SpentUSD != 0.05 || s.LedgerErr != nil {
		t.Errorf("got spent $%v, shared $%v, err %v; want 0.05, 0.05, nil", s.SpentUSD, s.Shared.SpentUSD, s.LedgerErr)
	}
}
