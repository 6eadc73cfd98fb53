package pgledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Periods as the meter names them; only total never rolls over.
const periodTotal = "total"

// maxModels bounds one budget's per-model rows in a period; model names
// come from the agent, so further names share otherModel (as in the file
// ledger).
const (
	maxModels  = 256
	otherModel = "(other)"
)

// ErrRefused: a reservation would take a budget past its cap. The error is
// a *RefusedError naming the budget.
var ErrRefused = errors.New("budget cap would be crossed")

// RefusedError is ErrRefused with the figures of the budget that refused.
type RefusedError struct {
	Budget                           string
	SpentNano, ReservedNano, CapNano int64
	NeedNano                         int64
	PeriodStart                      time.Time
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("budget %q: spent %d + reserved %d + need %d nano-USD > cap %d",
		e.Budget, e.SpentNano, e.ReservedNano, e.NeedNano, e.CapNano)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Budget is one named cap a reservation is held against.
type Budget struct {
	Name    string
	CapNano int64
}

// Period is the budget period a call falls in: its kind (day, week,
// month, total) and its UTC start, as the meter computes them.
type Period struct {
	Kind  string
	Start time.Time
}

// Reservation asks for Nano against every one of Budgets (this budget
// first, then its shared parent), for a call to Model.
type Reservation struct {
	Budgets []Budget
	Period  Period
	Model   string
	Nano    int64
}

// Reserve holds r.Nano against all of r.Budgets in one transaction, or
// none: a conditional update on each budget's row refuses it with a
// *RefusedError when spent + reserved + need would pass that budget's
// cap. Rows are locked in name order so that instances racing on the same
// budgets queue instead of deadlocking. The reservation carries this
// store's instance id and a lease; the returned id settles or releases
// it. Reservations of other instances whose leases ran out are charged
// (Sweep) after it, when the batch saw any.
func (s *Store) Reserve(ctx context.Context, r Reservation) (int64, error) {
	order := slices.Clone(r.Budgets)
	slices.SortFunc(order, func(a, b Budget) int { return cmpString(a.Name, b.Name) })
	var id int64
	var sweep bool
	err := s.inTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT EXISTS (SELECT 1 FROM egressd_reservation WHERE NOT charged AND lease_until < clock_timestamp())`)
		for _, bu := range order {
			queueRoll(b, bu.Name, bu.CapNano, r.Period)
			b.Queue(`UPDATE egressd_budget SET reserved_nano = reserved_nano + $2, cap_nano = $3, updated_at = now()
				WHERE name = $1 AND spent_nano + reserved_nano + $2 <= $3`, bu.Name, r.Nano, bu.CapNano)
		}
		var shared *string
		if len(r.Budgets) > 1 {
			shared = &r.Budgets[1].Name
		}
		b.Queue(`INSERT INTO egressd_reservation (budget, shared, model, nano, instance, lease_until)
			VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6::interval) RETURNING id`,
			r.Budgets[0].Name, shared, r.Model, r.Nano, s.instance, s.lease)
		refused, err := readReserve(tx.SendBatch(ctx, b), order, &sweep, &id)
		if err != nil || refused == "" {
			return err
		}
		re := &RefusedError{Budget: refused, NeedNano: r.Nano}
		for _, bu := range order {
			if bu.Name == refused {
				re.CapNano = bu.CapNano
			}
		}
		if err := tx.QueryRow(ctx, `SELECT spent_nano, reserved_nano, period_start FROM egressd_budget WHERE name = $1`,
			refused).Scan(&re.SpentNano, &re.ReservedNano, &re.PeriodStart); err != nil {
			return fmt.Errorf("read refusing budget %q: %w", refused, err)
		}
		return re
	})
	if err == nil && sweep {
		if _, _, err := s.Sweep(ctx); err != nil {
			// The reservation stands; the next call or tick sweeps.
			return id, nil
		}
	}
	return id, err
}

// readReserve reads Reserve's batch and closes it; refused names the first
// budget (in name order) whose conditional update matched no row.
func readReserve(br pgx.BatchResults, order []Budget, sweep *bool, id *int64) (refused string, err error) {
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("reserve: %w", cerr)
		}
	}()
	if err := br.QueryRow().Scan(sweep); err != nil {
		return "", fmt.Errorf("look for expired leases: %w", err)
	}
	for _, bu := range order {
		if err := readRoll(br, bu.Name); err != nil {
			return "", err
		}
		tag, err := br.Exec()
		if err != nil {
			return "", fmt.Errorf("reserve against %q: %w", bu.Name, err)
		}
		if tag.RowsAffected() == 0 && refused == "" {
			refused = bu.Name
		}
	}
	if err := br.QueryRow().Scan(id); err != nil {
		return "", fmt.Errorf("record reservation: %w", err)
	}
	return refused, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Usage is what the provider reported for a settled call.
type Usage struct {
	InputTokens, OutputTokens int64
}

// Settlement ends a reservation: Release (the provider billed nothing) or
// a charge of CostNano.
type Settlement struct {
	ID        int64
	Period    Period
	CostNano  int64
	Usage     Usage
	Estimated bool
	Release   bool
	WarnNano  int64 // the reserving budget's warn threshold; 0 = none
}

// Settled is what Settle did.
type Settled struct {
	Found       bool  // false: the reservation was already settled
	Late        bool  // its lease had run out and it had been charged in full
	SpentNano   int64 // the reserving budget's spend after it
	CapNano     int64
	CrossedWarn bool // this settle took that spend past WarnNano
}

// Settle replaces a reservation with its real cost (or nothing, for a
// release) in one transaction on every budget it was held against. A
// reservation whose lease ran out was charged in full by a sweep; settling
// it charges the difference, never a second time.
func (s *Store) Settle(ctx context.Context, st Settlement) (Settled, error) {
	var out Settled
	err := s.inTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		out = Settled{}
		var budget, model string
		var shared *string
		var nano int64
		err := tx.QueryRow(ctx, `DELETE FROM egressd_reservation WHERE id = $1
			RETURNING budget, shared, model, nano, charged`, st.ID).Scan(&budget, &shared, &model, &nano, &out.Late)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("take reservation %d: %w", st.ID, err)
		}
		out.Found = true
		names := []string{budget}
		if shared != nil {
			names = append(names, *shared)
		}
		slices.Sort(names)
		dSpent, dReserved := st.CostNano, -nano
		if out.Late {
			dSpent, dReserved = st.CostNano-nano, 0
		}
		b := &pgx.Batch{}
		for _, name := range names {
			queueRoll(b, name, 0, st.Period)
			b.Queue(`UPDATE egressd_budget SET spent_nano = greatest(spent_nano + $2, 0),
				reserved_nano = reserved_nano + $3, lifetime_nano = greatest(lifetime_nano + $2, 0), updated_at = now()
				WHERE name = $1 RETURNING spent_nano, cap_nano`, name, dSpent, dReserved)
		}
		d := settleDelta(st, out.Late, dSpent)
		b.Queue(sqlModelUpdate, budget, model, d.requests, d.input, d.output, d.spent, d.estimated)
		warn := st.WarnNano > 0
		if warn {
			b.Queue(`UPDATE egressd_budget SET warned = true WHERE name = $1 AND NOT warned AND spent_nano >= $2`, budget, st.WarnNano)
		}
		br := tx.SendBatch(ctx, b)
		modelRows, err := readSettle(br, names, budget, warn, &out)
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("settle: %w", cerr)
		}
		if err != nil || modelRows > 0 || d == (modelDelta{}) {
			return err
		}
		return addModelNow(ctx, tx, budget, model, d)
	})
	return out, err
}

// modelDelta is a change to one model's row.
type modelDelta struct {
	requests, input, output, spent, estimated int64
}

// settleDelta is what a settle adds to its model's row. A late one was
// already counted as an estimated request by the sweep that charged it.
func settleDelta(st Settlement, late bool, dSpent int64) modelDelta {
	d := modelDelta{spent: dSpent}
	switch {
	case st.Release && late:
		d.requests, d.estimated = -1, -1
	case st.Release:
	case late:
		d.input, d.output = st.Usage.InputTokens, st.Usage.OutputTokens
		if !st.Estimated {
			d.estimated = -1
		}
	default:
		d.requests, d.input, d.output = 1, st.Usage.InputTokens, st.Usage.OutputTokens
		if st.Estimated {
			d.estimated = 1
		}
	}
	return d
}

// addModel applies d to model's row of budget's period, folding names past
// maxModels into otherModel.
func addModel(ctx context.Context, tx pgx.Tx, budget string, start time.Time, model string, d modelDelta) error {
	if d == (modelDelta{}) {
		return nil
	}
	const upd = `UPDATE egressd_model_spend SET requests = requests + $4, input_tokens = input_tokens + $5,
		output_tokens = output_tokens + $6, spent_nano = greatest(spent_nano + $7, 0), estimated = greatest(estimated + $8, 0)
		WHERE budget = $1 AND period_start = $2 AND model = $3`
	tag, err := tx.Exec(ctx, upd, budget, start, model, d.requests, d.input, d.output, d.spent, d.estimated)
	if err == nil && tag.RowsAffected() == 0 {
		var n int
		err = tx.QueryRow(ctx, `SELECT count(*) FROM egressd_model_spend WHERE budget = $1 AND period_start = $2`, budget, start).Scan(&n)
		if n >= maxModels {
			model = otherModel
		}
		if err == nil {
			_, err = tx.Exec(ctx, `INSERT INTO egressd_model_spend
				(budget, period_start, model, requests, input_tokens, output_tokens, spent_nano, estimated)
				VALUES ($1, $2, $3, greatest($4::bigint, 0), $5, $6, greatest($7::bigint, 0), greatest($8::bigint, 0))
				ON CONFLICT (budget, period_start, model) DO UPDATE SET
				requests = egressd_model_spend.requests + EXCLUDED.requests,
				input_tokens = egressd_model_spend.input_tokens + EXCLUDED.input_tokens,
				output_tokens = egressd_model_spend.output_tokens + EXCLUDED.output_tokens,
				spent_nano = egressd_model_spend.spent_nano + EXCLUDED.spent_nano,
				estimated = egressd_model_spend.estimated + EXCLUDED.estimated`,
				budget, start, model, d.requests, d.input, d.output, d.spent, d.estimated)
		}
	}
	if err != nil {
		return fmt.Errorf("record model spend of %q: %w", budget, err)
	}
	return nil
}

// sqlModelUpdate adds to a model's row in its budget's current period;
// it matches no row the first time a model is seen in a period.
const sqlModelUpdate = `UPDATE egressd_model_spend SET requests = requests + $3, input_tokens = input_tokens + $4,
	output_tokens = output_tokens + $5, spent_nano = greatest(spent_nano + $6, 0), estimated = greatest(estimated + $7, 0)
	WHERE budget = $1 AND model = $2 AND period_start = (SELECT period_start FROM egressd_budget WHERE name = $1)`

// readSettle reads Settle's batch into out and returns how many model
// rows its model update matched.
func readSettle(br pgx.BatchResults, names []string, budget string, warn bool, out *Settled) (int64, error) {
	for _, name := range names {
		if err := readRoll(br, name); err != nil {
			return 0, err
		}
		var spent, capNano int64
		if err := br.QueryRow().Scan(&spent, &capNano); err != nil {
			return 0, fmt.Errorf("settle against %q: %w", name, err)
		}
		if name == budget {
			out.SpentNano, out.CapNano = spent, capNano
		}
	}
	tag, err := br.Exec()
	if err != nil {
		return 0, fmt.Errorf("record model spend of %q: %w", budget, err)
	}
	if warn {
		wt, err := br.Exec()
		if err != nil {
			return 0, fmt.Errorf("mark %q warned: %w", budget, err)
		}
		out.CrossedWarn = wt.RowsAffected() == 1
	}
	return tag.RowsAffected(), nil
}
