package gateway

import (
	"context"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

const floodCall = `{"model":"anthropic/claude-sonnet-4.5","max_tokens":500,"stream":true,"messages":[]}`

// TestFloodOfHungUpCallsChargedTheirReservations: an agent starts many
// streams and hangs up on each after the first chunk. Two drain slots
// cannot wait for them all; whether drained to the deadline or cut at
// once, every call is charged its full reservation, never a smaller
// figure from the little that streamed.
func TestFloodOfHungUpCallsChargedTheirReservations(t *testing.T) {
	const calls = 24
	never := make(chan struct{})
	defer close(never)
	r := newRig(t, gatedStream(never, ""), withMaxDrains(2), withDrainTimeout(30*time.Millisecond))
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL+"/openrouter/api/v1/chat/completions", strings.NewReader(floodCall))
			req.Header.Set("Authorization", "Bearer "+agentToken)
			resp, err := r.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			buf := make([]byte, len(firstChunk))
			if _, err := resp.Body.Read(buf); err != nil {
				t.Errorf("first chunk: %v", err)
			}
			cancel()
			resp.Body.Close()
		}()
	}
	wg.Wait()
	waitFor(t, "every call to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == calls })
	var want float64
	for _, u := range r.rec.ByEvent(vocab.EventUsage) {
		q, err := r.meter.Quote("anthropic/claude-sonnet-4.5", u.InputTokens, 500)
		if err != nil {
			t.Fatal(err)
		}
		if !u.Estimated || math.Abs(u.CostUSD-q.MaxCostUSD) > 1e-9 {
			t.Errorf("call charged %+v, want its reservation $%v marked as an estimate", u, q.MaxCostUSD)
		}
		want += q.MaxCostUSD
	}
	if s := r.meter.Snapshot(); math.Abs(s.SpentUSD-want) > 1e-6 || s.ReservedUSD != 0 || s.SpentUSD < calls*500*15/1e6 {
		t.Errorf("spent $%v with $%v reserved, want the %d reservations' $%v", s.SpentUSD, s.ReservedUSD, calls, want)
	}
}

// TestUpstreamBreaksMidStream: the provider's connection dies after the
// first chunk, so its usage never comes: the call is charged its full
// reservation.
func TestUpstreamBreaksMidStream(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(firstChunk))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	resp := r.post("/openrouter/api/v1/chat/completions", floodCall)
	readAll(t, resp)
	waitFor(t, "the call to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
	u := r.rec.ByEvent(vocab.EventUsage)[0]
	q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", u.InputTokens, 500)
	if !u.Estimated || math.Abs(r.meter.Snapshot().SpentUSD-q.MaxCostUSD) > 1e-9 {
		t.Errorf("usage %+v, spent $%v: want the reservation $%v as an estimate", u, r.meter.Snapshot().SpentUSD, q.MaxCostUSD)
	}
}

// TestUnreachableProviderChargesNothing: a call that never left egressd
// (the dial failed) cannot have been billed, and is released.
func TestUnreachableProviderChargesNothing(t *testing.T) {
	r := newRig(t, anyAnswer)
	r.fake.srv.Close()
	resp := r.post("/openrouter/api/v1/chat/completions", floodCall)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got %d, want 502", resp.StatusCode)
	}
	if s := r.meter.Snapshot(); s.SpentUSD != 0 || s.ReservedUSD != 0 {
		t.Errorf("spent $%v reserved $%v, want nothing", s.SpentUSD, s.ReservedUSD)
	}
}

// TestProviderHangsUpBeforeAnswering: the request reached the provider,
// which closed the connection without a response. Its usage will never
// come, so the call is charged its reservation, and the agent gets one
// 502 and one decision entry.
func TestProviderHangsUpBeforeAnswering(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","max_tokens":500,"messages":[]}`)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got %d, want 502", resp.StatusCode)
	}
	waitFor(t, "the call to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
	u := r.rec.ByEvent(vocab.EventUsage)[0]
	q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", u.InputTokens, 500)
	if s := r.meter.Snapshot(); !u.Estimated || math.Abs(s.SpentUSD-q.MaxCostUSD) > 1e-9 || s.ReservedUSD != 0 {
		t.Errorf("usage %+v spent $%v reserved $%v, want the reservation $%v charged", u, s.SpentUSD, s.ReservedUSD, q.MaxCostUSD)
	}
	if n := len(r.rec.ByEvent(vocab.EventDecision)); n != 1 {
		t.Errorf("%d decision entries, want 1", n)
	}
}
