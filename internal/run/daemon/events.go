package daemon

import (
	"fmt"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/meter"
)

// budgetWatch turns the gateway's decision-log entries into the budget
// events of the ask: channels (warn_at crossed, cap reached), once each
// per period, and keeps the spend history the console charts. It reads
// the meter's snapshot after each gateway entry, so it needs no hook in
// the meter.
type budgetWatch struct {
	d *daemon

	mu      sync.Mutex
	warned  bool
	capped  bool
	period  time.Time
	history []spendPoint // spend over the current period, oldest first
}

// spendPoint is the period's spend at a moment.
type spendPoint struct {
	At  time.Time
	USD float64
}

// maxHistory bounds the points kept; older ones are thinned.
const maxHistory = 2048

// Record implements declog.Recorder.
func (w *budgetWatch) Record(e declog.Entry) {
	if e.Proto != vocab.ProtoGateway || w.d.meter == nil {
		return
	}
	w.observe(w.d.meter.Snapshot())
}

// prime takes the state at start: a warning already given in this period
// is not given again after a restart.
func (w *budgetWatch) prime(s meter.Snapshot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warned, w.capped, w.period = s.Warned, s.CapUSD > 0 && s.SpentUSD >= s.CapUSD, s.PeriodStart
	w.history = []spendPoint{{At: time.Now(), USD: s.SpentUSD}}
}

func (w *budgetWatch) observe(s meter.Snapshot) {
	w.mu.Lock()
	if !s.PeriodStart.Equal(w.period) { // a new period: everything starts over
		w.warned, w.capped, w.period, w.history = false, false, s.PeriodStart, nil
	}
	var events []string
	var kinds []ask.EventKind
	if s.Warned && !w.warned {
		w.warned = true
		kinds = append(kinds, ask.EventBudgetWarn)
		events = append(events, fmt.Sprintf("egressd: LLM spend $%.2f passed %.0f%% of the $%.2f cap this %s", s.SpentUSD, s.WarnAt*100, s.CapUSD, s.Period))
	}
	if s.CapUSD > 0 && s.SpentUSD >= s.CapUSD && !w.capped {
		w.capped = true
		kinds = append(kinds, ask.EventBudgetCap)
		events = append(events, fmt.Sprintf("egressd: LLM spend $%.2f reached the $%.2f cap: every metered call is refused until the %s resets", s.SpentUSD, s.CapUSD, s.Period))
	}
	w.history = append(w.history, spendPoint{At: time.Now(), USD: s.SpentUSD})
	if len(w.history) > maxHistory {
		thin := w.history[:0]
		for i, p := range w.history {
			if i%2 == 0 || i == len(w.history)-1 {
				thin = append(thin, p)
			}
		}
		w.history = thin
	}
	w.mu.Unlock()
	for i, k := range kinds {
		w.d.ask.Event(k, events[i])
	}
}

// History is the spend over the current period, oldest first.
func (w *budgetWatch) History() []spendPoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]spendPoint(nil), w.history...)
}

// inFlightAtStart reads the ledger as Open will find it: calls it holds in
// flight were cut by a crash and will be charged in full.
func inFlightAtStart(path string) (calls int64, usd float64) {
	st, err := meter.ReadLedger(path)
	if err != nil {
		return 0, 0 // a missing ledger holds nothing; Open reports any other problem
	}
	var nano int64
	for _, p := range st.InFlight {
		calls += p.Calls
		nano += p.ReservedNano
	}
	return calls, float64(nano) / 1e9
}

// startupEvents tells the channels what the start found.
func (d *daemon) startupEvents() {
	if d.crashCalls > 0 {
		d.ask.Event(ask.EventCrashCharged, fmt.Sprintf(
			"egressd restarted after a crash: %d LLM calls were in flight and are charged in full as estimates ($%.4f)", d.crashCalls, d.crashUSD))
	}
	if d.meter != nil {
		d.budget.prime(d.meter.Snapshot())
	}
}
