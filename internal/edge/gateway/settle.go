package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/internal/lib/scrub"
	"github.com/egressd/egressd/internal/shared/meter"
)

// BytesPerOutputToken turns the bytes a call without usage streamed into
// the output tokens its usage entry records (up to the reserved output);
// the charge itself is at least the reservation (estimate).
const BytesPerOutputToken = 4

// settle charges the call: the provider's usage when it arrived, an
// estimate (marked) when a successful or cut call reported none, nothing
// for a provider error without usage. A call cut by the stream guard, or
// charged more than it reserved, is logged as budget_exceeded.
func (c *call) settle(ms *meterState, status int, ex *meter.Extractor, readErr error, cut bool) (cost float64, estimated bool, note string) {
	if ms == nil {
		return 0, false, ""
	}
	u, state := ex.Result()
	ok := status >= 200 && status < 300
	if ms.fixed {
		return c.settleFixed(ms, ok)
	}
	seen := ex.OutputTokensSeen()
	past := cut
	switch {
	case state == meter.UsageNone && !ok && !cut:
		c.release(ms)
		return 0, false, ""
	case state == meter.UsageFinal:
		u.FeesUSD = ms.tools.feesFor(u)
		cost = meter.Cost(ms.q.Price, u)
	default:
		past = cut || seen > ms.limit
		u, cost = estimate(ms, u, state, ex.Bytes(), seen)
		estimated = true
		note = "no final usage from the provider: charged its full reservation as an estimate"
	}
	if cut {
		note = joinNote(note, fmt.Sprintf("output passed the %d tokens reserved (about %d seen, guard at %d): the stream was cut",
			ms.q.OutputTokens, seen, ms.limit))
	}
	over := past || ms.res.Exceeds(cost)
	if over && !cut {
		note = joinNote(note, fmt.Sprintf("charged $%.6f, more than the $%.6f reserved", cost, ms.res.USD()))
	}
	if readErr != nil {
		note = joinNote(note, "upstream read failed: "+scrub.String(readErr.Error(), c.key))
	}
	crossed, err := ms.res.Settle(cost, u, estimated)
	c.recordUsage(u, cost, estimated, over)
	if crossed {
		c.recordWarn()
	}
	if err != nil {
		// The meter logged it and now refuses new calls; the spend is kept.
		note = joinNote(note, "ledger write failed")
	}
	return cost, estimated, note
}

// settleFixed charges a policy endpoint its declared price, unless the
// provider refused the call.
func (c *call) settleFixed(ms *meterState, ok bool) (float64, bool, string) {
	if !ok {
		c.release(ms)
		return 0, false, ""
	}
	cost := ms.res.USD()
	crossed, err := ms.res.Settle(cost, meter.Usage{}, false)
	c.recordUsage(meter.Usage{}, cost, false, false)
	if crossed {
		c.recordWarn()
	}
	if err != nil {
		return cost, false, "ledger write failed"
	}
	return cost, false, ""
}

// estimate builds a usage for a call whose provider never sent a final
// figure (the agent hung up, the drain was cut or had no slot, the
// upstream broke, the stream was cut): input as reported (Anthropic's
// message_start) or as estimated before sending; output the larger of
// what was seen and the byte floor. The call is charged its full
// reservation, the worst case it was admitted for, or more when the
// evidence (output past the guard, reported input) says it cost more:
// never a smaller figure inferred from what happened to stream, since
// what the provider generated after the cut is unknown.
func estimate(ms *meterState, got meter.Usage, state meter.Completeness, n, seen int64) (meter.Usage, float64) {
	u := got
	u.HasCost, u.CostUSD = false, 0
	if state == meter.UsageNone {
		u.InputTokens = ms.q.InputTokens
	}
	floor := min((n+BytesPerOutputToken-1)/BytesPerOutputToken, ms.q.OutputTokens)
	u.OutputTokens = max(u.OutputTokens, floor, seen)
	return u, max(meter.Cost(ms.q.Price, u), ms.res.USD())
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// drainer tracks whether the agent has left a call and, if so, holds one
// of the bounded drain slots and the drain deadline.
type drainer struct {
	h      *Handler
	cancel context.CancelFunc // cuts the upstream

	left        atomic.Bool
	mu          sync.Mutex
	finished    bool
	slot        bool
	timer       *time.Timer
	stopOnClose func() bool
}

func newDrainer(h *Handler, cancel context.CancelFunc) *drainer {
	return &drainer{h: h, cancel: cancel}
}

// gone reports whether the agent has left.
func (d *drainer) gone() bool { return d.left.Load() }

// start is called when the agent leaves (write failure or its context
// ending). It takes a drain slot and arms the deadline, or cuts the
// upstream at once when all slots are busy or the gateway is closing.
func (d *drainer) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished || d.left.Load() {
		return
	}
	d.left.Store(true)
	if d.h.closeCtx.Err() != nil {
		d.cancel()
		return
	}
	select {
	case d.h.slots <- struct{}{}:
		d.slot = true
		d.h.draining.Add(1)
		d.timer = time.AfterFunc(d.h.drainFor, d.cancel)
		d.stopOnClose = context.AfterFunc(d.h.closeCtx, d.cancel)
	default:
		d.h.log.Warn("gateway: too many drains, cutting the upstream; the call is charged an estimate if no usage arrived",
			"max_drains", cap(d.h.slots))
		d.cancel()
	}
}

// finish releases the slot; a start after it is a no-op.
func (d *drainer) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.finished = true
	if d.slot {
		d.timer.Stop()
		d.stopOnClose()
		<-d.h.slots
		d.h.draining.Add(-1)
		d.slot = false
	}
}
