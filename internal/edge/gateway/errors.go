package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/money"
	"github.com/egressd/egressd/internal/lib/statusline"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// refuse answers an error in the provider's shape, with the reason in the
// status line too (on a server set up with statusline), and logs the
// request's one decision entry. Refusals the agent cannot fix by retrying carry
// x-should-retry: false, which the OpenAI and Anthropic SDKs honour
// instead of retrying a 429 or 503 on their own.
func (c *call) refuse(status int, reason vocab.Reason, typ, msg string, extra ...any) {
	body := errorBody(c.format, typ, msg, extra...)
	hd := c.w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Egressd-Reason", reason.String())
	if reason != vocab.ReasonRateLimited {
		hd.Set("X-Should-Retry", "false")
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	statusline.Arm(c.r.Context(), status, policy.StatusPhrase(reason, "/"+c.name+"/", ""))
	c.w.WriteHeader(status)
	c.w.Write(body)
	c.record(vocab.Deny, reason, status, int64(len(body)))
	c.h.log.Warn("gateway refused", "client", c.client, "provider", c.name, "method", c.r.Method,
		"model", logSafe(c.model), "status", status, "reason", reason.String(), "detail", msg)
}

// errorBody renders an OpenAI- or Anthropic-shaped error. extra are
// key/value pairs added next to type and message.
func errorBody(f meter.Format, typ, msg string, extra ...any) []byte {
	inner := map[string]any{"type": typ, "message": msg}
	for i := 0; i+1 < len(extra); i += 2 {
		inner[extra[i].(string)] = extra[i+1]
	}
	var outer map[string]any
	if f == meter.FormatAnthropic {
		outer = map[string]any{"type": "error", "error": inner}
	} else {
		inner["code"], inner["param"] = typ, nil
		outer = map[string]any{"error": inner}
	}
	b, _ := json.Marshal(outer) // maps of strings and numbers always encode
	return append(b, '\n')
}

// refuseReservation maps a meter refusal to its answer.
func (c *call) refuseReservation(err error) {
	var be *meter.BudgetError
	switch {
	case errors.As(err, &be):
		c.refuse(http.StatusTooManyRequests, vocab.ReasonBudgetExceeded, "budget_exceeded", budgetMessage(be),
			"spend", be.SpentUSD, "cap", be.CapUSD, "reserved", be.ReservedUSD, "resets_at", resetsAt(be))
	default:
		c.refuseLedger(err)
	}
}

// budgetMessage is what the agent reads when the cap stops a call, figures
// in money.Format's spelling.
func budgetMessage(be *meter.BudgetError) string {
	period, resets := "in total", "The budget never resets (budget.period: total)."
	if !be.ResetsAt.IsZero() {
		period, resets = "this period", "The budget resets at "+be.ResetsAt.UTC().Format(time.RFC3339)+"."
	}
	return fmt.Sprintf("egressd spend cap reached: spent %s of %s %s (plus %s in flight); this call could cost up to %s. %s",
		money.Format(be.SpentUSD), money.Format(be.CapUSD), period, money.Format(be.ReservedUSD), money.Format(be.NeedUSD), resets)
}

// resetsAt is the resets_at field: RFC 3339, or null for period total.
func resetsAt(be *meter.BudgetError) any {
	if be.ResetsAt.IsZero() {
		return nil
	}
	return be.ResetsAt.UTC().Format(time.RFC3339)
}

func (c *call) refuseLedger(err error) {
	c.h.log.Error("gateway: spend ledger unavailable, refusing metered call", "provider", c.name, "err", err)
	c.refuse(http.StatusServiceUnavailable, vocab.ReasonLedgerUnavailable, "ledger_unavailable",
		"egressd cannot record spend (its ledger is unreadable or unwritable), so metered calls are refused until an operator fixes it")
}

// record writes the request's decision entry.
func (c *call) record(v vocab.Verdict, reason vocab.Reason, status int, bytesDn int64) {
	c.h.rec.Record(declog.Entry{
		Time: c.start, Event: vocab.EventDecision, Client: c.client, Proto: vocab.ProtoGateway,
		Host: c.name, Method: logSafe(c.r.Method), Verdict: v, Reason: reason, Status: status,
		BytesUp: c.bytesUp, BytesDn: bytesDn, Duration: c.h.clock().Sub(c.start),
		Model: logSafe(c.model),
	})
}

// recordUsage writes the usage entry of a settled call; over marks a call
// that cost more than it reserved or was cut by the stream guard.
func (c *call) recordUsage(u meter.Usage, cost float64, estimated, over bool) {
	reason := vocab.ReasonAllowlisted
	if over {
		reason = vocab.ReasonBudgetExceeded
	}
	c.h.rec.Record(declog.Entry{
		Time: c.h.clock(), Event: vocab.EventUsage, Client: c.client, Proto: vocab.ProtoGateway,
		Host: c.name, Verdict: vocab.Allow, Reason: reason,
		Provider: c.name, Model: logSafe(c.model), InputTokens: u.TotalInput(), OutputTokens: u.OutputTokens,
		CostUSD: cost, Estimated: estimated,
	})
}

// The meter has already logged the crossing with slog.
func (c *call) recordWarn() {
	s := c.h.meter.Snapshot()
	c.h.rec.Record(declog.Entry{
		Time: c.h.clock(), Event: vocab.EventBudgetWarn, Proto: vocab.ProtoGateway, Host: c.name,
		Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Provider: c.name, CostUSD: s.SpentUSD,
	})
}

// logDone is the one summary line of a forwarded call.
func (c *call) logDone(status int, bytesDn int64, cost float64, estimated bool, note string) {
	lvl := slog.LevelInfo
	if note != "" {
		lvl = slog.LevelWarn
	}
	c.h.log.Log(c.r.Context(), lvl, "gateway call", "client", c.client, "provider", c.name,
		"method", c.r.Method, "model", logSafe(c.model), "status", status, "bytes_down", bytesDn,
		"cost_usd", cost, "estimated", estimated, "duration", c.h.clock().Sub(c.start), "note", note)
}

// quote renders an agent-chosen string for a message.
func quote(s string) string { return strconv.Quote(logSafe(strings.ToValidUTF8(s, "?"))) }
