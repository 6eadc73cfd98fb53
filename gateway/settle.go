package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/meter"
)

// BytesPerOutputToken estimates output from streamed bytes when the
// provider never reported usage. Streams carry far more framing than text
// (an SSE chunk is ~150 bytes for a few tokens), so this overestimates;
// the estimate is capped at the call's reservation.
const BytesPerOutputToken = 4

// settle charges the call: the provider's usage when it arrived, an
// estimate (marked) when a successful or cut call reported none, nothing
// for a provider error without usage.
func (c *call) settle(ms *meterState, status int, ex *meter.Extractor, readErr error) (cost float64, estimated bool, note string) {
	if ms == nil {
		return 0, false, ""
	}
	u, state := ex.Result()
	ok := status >= 200 && status < 300
	switch {
	case state == meter.UsageNone && !ok:
		c.release(ms)
		return 0, false, ""
	case state == meter.UsageFinal:
		cost = meter.Cost(ms.q.Price, u)
	default:
		u, cost = estimate(ms, u, state, ex.Bytes())
		estimated = true
		note = "no final usage from the provider: charged an estimate"
	}
	if readErr != nil {
		note = joinNote(note, "upstream read failed: "+scrubString(readErr.Error(), c.key))
	}
	crossed, err := ms.res.Settle(cost, u, estimated)
	c.h.tpm.adjust(c.name, c.prov.TokensPerMinute, u.TotalInput()+u.OutputTokens-ms.q.InputTokens)
	c.recordUsage(u, cost, estimated)
	if crossed {
		c.recordWarn()
	}
	if err != nil {
		// The meter logged it and now refuses new calls; the spend is kept.
		note = joinNote(note, "ledger write failed")
	}
	return cost, estimated, note
}

// estimate builds a usage for a call whose provider never sent a final
// figure: input as reported (Anthropic's message_start) or as estimated
// before sending, output from the bytes streamed. The cost is capped at
// the reservation, the call's declared worst case, unless reported input
// alone already costs more.
func estimate(ms *meterState, got meter.Usage, state meter.Completeness, n int64) (meter.Usage, float64) {
	u := got
	u.HasCost, u.CostUSD = false, 0
	if state == meter.UsageNone {
		u.InputTokens = ms.q.InputTokens
	}
	u.OutputTokens = max(u.OutputTokens, (n+BytesPerOutputToken-1)/BytesPerOutputToken)
	known := 0.0
	if state != meter.UsageNone {
		known = meter.Cost(ms.q.Price, meter.Usage{InputTokens: u.InputTokens,
			CacheReadTokens: u.CacheReadTokens, CacheWriteTokens: u.CacheWriteTokens})
	}
	return u, min(meter.Cost(ms.q.Price, u), max(ms.res.USD(), known))
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
