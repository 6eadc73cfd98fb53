package gateway

import (
	"sync/atomic"

	"github.com/egressd/egressd/internal/shared/meter"
)

// hold is what a metered call holds while it runs: its reservation against
// the cap and its estimated input, taken from the provider's
// tokens_per_minute bucket. Whichever of Release or Settle comes first
// ends it; the other is a no-op, so a deferred Release is always safe.
type hold struct {
	res   *meter.Reservation
	tpm   *tpmBuckets
	name  string // provider
	limit int    // its tokens_per_minute
	input int64  // estimated input tokens taken from the bucket
	ended atomic.Bool
}

// Release gives both back: the call was not billed.
func (h *hold) Release() {
	if h.ended.CompareAndSwap(false, true) {
		h.res.Release()
		h.tpm.adjust(h.name, h.limit, -h.input)
	}
}

// Settle charges cost and evens the bucket to the tokens the call really
// used. crossed reports that spend passed budget.warn_at.
func (h *hold) Settle(cost float64, u meter.Usage, estimated bool) (crossed bool, err error) {
	if !h.ended.CompareAndSwap(false, true) {
		return false, nil
	}
	crossed, err = h.res.Settle(cost, u, estimated)
	h.tpm.adjust(h.name, h.limit, u.TotalInput()+u.OutputTokens-h.input)
	return crossed, err
}

// USD is the reservation's worst case.
func (h *hold) USD() float64 { return h.res.USD() }

// Exceeds reports whether usd is more than was reserved.
func (h *hold) Exceeds(usd float64) bool { return h.res.Exceeds(usd) }
