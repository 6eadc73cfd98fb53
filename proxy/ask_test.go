package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// fakeAsker answers every question the way the test says, granting
// through the policy overlay as the real broker does.
type fakeAsker struct {
	e      *env
	answer vocab.Reason // ReasonNone = grant
	mu     sync.Mutex
	asked  []policy.Request
}

func (a *fakeAsker) Hold(_ context.Context, req policy.Request, d policy.Decision) (vocab.Reason, time.Duration, string) {
	a.mu.Lock()
	a.asked = append(a.asked, req)
	answer := a.answer
	a.mu.Unlock()
	switch answer {
	case vocab.ReasonNone:
		g := policy.Grant{Host: req.Host, Port: req.Port, Until: time.Now().Add(time.Hour), By: "test", Kind: "once"}
		a.e.pol.Store(a.e.pol.Load().WithOverlay(policy.NewOverlay([]policy.Grant{g})))
		return vocab.ReasonNone, 0, ""
	case vocab.ReasonApprovalPending:
		return vocab.ReasonApprovalPending, 30 * time.Second, "a person was asked at 12:00:00Z to allow " + req.Host + " (question q1)"
	}
	return answer, 0, "a person refused it"
}

func (a *fakeAsker) setAnswer(r vocab.Reason) {
	a.mu.Lock()
	a.answer = r
	a.mu.Unlock()
}

func (a *fakeAsker) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.asked)
}

func newAskFixture(t *testing.T, answer vocab.Reason) (*fixture, *fakeAsker) {
	a := &fakeAsker{answer: answer}
	f := newFixture(t, fixOpts{extraTop: "ask: {}\n", mod: func(c *Config) { c.Ask = a }})
	a.e = f.env
	f.res.set("asked.test", "127.0.0.1")
	f.res.set("sneaky.test", "10.0.0.1")
	return f, a
}

func TestAskGrantLetsTheHeldRequestThrough(t *testing.T) {
	f, a := newAskFixture(t, vocab.ReasonNone)
	c, br := f.connect(f.ep("asked.test"))
	echo(t, c, br, "held then allowed")
	c.Close()
	resp, body := f.get("http://"+f.hp("asked2.test")+"/x", f.hp("asked2.test"))
	if resp.StatusCode != http.StatusBadGateway { // granted, then resolved: the fake resolver does not know it
		t.Errorf("plain GET after a grant: got %d %q, want 502 resolve_failed (it went on to resolve)", resp.StatusCode, body)
	}
	f.res.set("asked3.test", "127.0.0.1")
	resp, body = f.get("http://"+f.hp("asked3.test")+"/x", f.hp("asked3.test"))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("plain GET held then allowed: got %d %q, want 200", resp.StatusCode, body)
	}
	if a.count() != 3 {
		t.Errorf("questions: got %d, want 3", a.count())
	}
}

func TestAskGrantStillChecksTheAddress(t *testing.T) {
	f, _ := newAskFixture(t, vocab.ReasonNone)
	resp, body := f.roundTrip(connectReq("sneaky.test:443"))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egressd-Reason") != "private_address" {
		t.Errorf("granted name resolving to 10.0.0.1: got %d %s %q, want 403 private_address", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body)
	}
}

func TestAskRefusalsSayAPersonWasAsked(t *testing.T) {
	tests := []struct {
		answer     vocab.Reason
		raw        func(f *fixture) string
		wantPhrase string
		wantRetry  string
	}{
		{vocab.ReasonApprovalPending, func(f *fixture) string { return connectReq("asked.test:443") },
			"403 egressd approval_pending: a person was asked; retry in 30s", "30"},
		{vocab.ReasonApprovalPending, func(f *fixture) string { return getReq("http://"+f.hp("asked.test")+"/", f.hp("asked.test")) },
			"403 egressd approval_pending: a person was asked; retry in 30s", "30"},
		{vocab.ReasonOperatorDenied, func(f *fixture) string { return connectReq("asked.test:443") },
			"403 egressd operator_denied: a person refused this destination", ""},
	}
	for _, tt := range tests {
		f, _ := newAskFixture(t, tt.answer)
		mark := len(f.rec.All())
		resp, body := f.roundTrip(tt.raw(f))
		if resp.Status != tt.wantPhrase || resp.Header.Get("Retry-After") != tt.wantRetry {
			t.Errorf("status line: got %q Retry-After %q, want %q %q", resp.Status, resp.Header.Get("Retry-After"), tt.wantPhrase, tt.wantRetry)
		}
		if resp.Header.Get("X-Egressd-Reason") != tt.answer.String() || !strings.HasPrefix(body, "egressd: denied ") ||
			!strings.Contains(body, "a person") || strings.Count(body, "\n") != 1 {
			t.Errorf("reason %q body %q: want %s and one line saying a person was asked", resp.Header.Get("X-Egressd-Reason"), body, tt.answer)
		}
		e := decisionFor(t, f.rec, "asked.test", tt.answer)
		if e.Status != 403 || e.Verdict != vocab.Deny {
			t.Errorf("decision entry: got %+v", e)
		}
		for _, en := range f.rec.All()[mark:] {
			if en.Verdict.Allowed() {
				t.Errorf("refused request also logged as allowed: %+v", en)
			}
		}
	}
}

// TestAskNeverForUnaskable: only allow-list misses are put to a person.
func TestAskNeverForUnaskable(t *testing.T) {
	f, a := newAskFixture(t, vocab.ReasonNone)
	for _, raw := range []string{
		connectReq("10.0.0.1:443"),                                     // ip_literal_not_allowed
		connectReq(f.ep("private.b.test")),                             // private_address after resolution
		connectReq("bad host:443"),                                     // bad_request
		getReq("http://"+f.hp("granted.test")+"/", f.hp("asked.test")), // host_mismatch
		connectReq("169.254.169.254:80"),                               // metadata
	} {
		resp, _ := f.roundTrip(raw)
		if resp.StatusCode < 400 {
			t.Errorf("%q: got %d, want a refusal", firstLine(raw), resp.StatusCode)
		}
	}
	if a.count() != 0 {
		t.Errorf("asked %d times about unaskable denials: %+v", a.count(), a.asked)
	}
}

// TestAskOnceKeepsItsTunnel: when an "allow once" lapses, the tunnel it let
// through stays open; when nothing grants it any more, Revoke cuts it.
func TestAskOnceKeepsItsTunnel(t *testing.T) {
	f, a := newAskFixture(t, vocab.ReasonNone)
	base := f.pol.Load()
	c, br := f.connect(f.ep("asked.test"))
	defer c.Close()
	a.setAnswer(vocab.ReasonApprovalPending)
	lapsed := policy.Grant{Host: "asked.test", Port: uint16(f.echo), Until: time.Now().Add(time.Hour), By: "test", Kind: "once", KeepOpen: true}
	f.pol.Store(base.WithOverlay(policy.NewOverlay([]policy.Grant{lapsed})))
	f.srv.Revoke()
	echo(t, c, br, "still open after the grace period")
	if resp, _ := f.roundTrip(connectReq(f.ep("asked.test"))); resp.StatusCode == http.StatusOK {
		t.Errorf("a new tunnel was admitted by a lapsed allow once")
	}
	f.pol.Store(base.WithOverlay(policy.NewOverlay(nil)))
	f.srv.Revoke()
	expectClosed(t, c, br)
}

// waitingAsker holds every question until its context ends, and reports
// both moments.
type waitingAsker struct {
	held, released chan struct{}
}

func (a waitingAsker) Hold(ctx context.Context, _ policy.Request, _ policy.Decision) (vocab.Reason, time.Duration, string) {
	a.held <- struct{}{}
	<-ctx.Done()
	a.released <- struct{}{}
	return vocab.ReasonApprovalPending, time.Second, "gone"
}

// TestAskHoldEndsWhenTheClientHangsUp: a held CONNECT, even one whose
// head the front reader could serve, ends its hold when the client hangs
// up, rather than keeping a person's question and a slot for nobody.
func TestAskHoldEndsWhenTheClientHangsUp(t *testing.T) {
	a := waitingAsker{held: make(chan struct{}, 1), released: make(chan struct{}, 1)}
	f := newFixture(t, fixOpts{extraTop: "ask: {}\n", mod: func(c *Config) { c.Ask = a }})
	f.res.set("asked.test", "127.0.0.1")
	c := f.dial()
	if _, err := c.Write([]byte(connectReq(f.ep("asked.test")))); err != nil {
		t.Fatal(err)
	}
	wait(t, a.held, "the CONNECT was never held")
	_ = c.Close()
	wait(t, a.released, "the hold outlived its client")
}
