package ask

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// rig is a Broker over a policy with ask: on, whose overlay is installed
// the way the daemon's holder installs it.
type rig struct {
	b    *Broker
	base *policy.Policy
	cur  atomic.Pointer[policy.Policy]
	now  atomic.Pointer[time.Time]
}

func newRig(t *testing.T, askYAML, state string) *rig {
	t.Helper()
	base, err := policy.LoadBytes([]byte("version: 1\nask: "+askYAML+"\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{base: base}
	r.cur.Store(base)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r.now.Store(&now)
	r.b = New(Config{Policy: r.cur.Load, StatePath: state,
		Apply: func(o *policy.Overlay) { r.cur.Store(base.WithOverlay(o)) },
		Clock: func() time.Time { return *r.now.Load() }, Logger: slog.New(slog.DiscardHandler)})
	return r
}

func (r *rig) advance(d time.Duration) {
	n := r.now.Load().Add(d)
	r.now.Store(&n)
}

var agent = netip.MustParseAddr("172.20.0.5")

func req(host string, port uint16) policy.Request {
	return policy.Request{Client: agent, Host: host, Port: port, Proto: vocab.ProtoConnect}
}

func (r *rig) decide(q policy.Request) policy.Decision { return r.cur.Load().Decide(q) }

// hold runs Hold in the background and returns its result channel.
func (r *rig) hold(ctx context.Context, q policy.Request) <-chan vocab.Reason {
	ch := make(chan vocab.Reason, 1)
	go func() {
		reason, _, _ := r.b.Hold(ctx, q, r.decide(q))
		ch <- reason
	}()
	return ch
}

// waitWaiting polls until one question is open with n requests held on it.
func (r *rig) waitWaiting(t *testing.T, n int) []Question {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := r.b.Pending()
		if len(p) == 1 && p[0].Waiting == n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending: got %+v, want one question with %d waiting", p, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAnswersReleaseHeldRequests(t *testing.T) {
	tests := []struct {
		answer     Answer
		wantReason vocab.Reason
		wantAfter  vocab.Reason // a new request for the same target
	}{
		{Answer{Kind: Once, By: "cli"}, vocab.ReasonNone, vocab.ReasonAllowlisted},
		{Answer{Kind: For, For: 2 * time.Hour, By: "cli"}, vocab.ReasonNone, vocab.ReasonAllowlisted},
		{Answer{Kind: Always, By: "cli"}, vocab.ReasonNone, vocab.ReasonAllowlisted}, // no editor: falls back to a grant
		{Answer{Kind: Deny, By: "cli"}, vocab.ReasonOperatorDenied, vocab.ReasonOperatorDenied},
	}
	for _, tt := range tests {
		t.Run(string(tt.answer.Kind), func(t *testing.T) {
			r := newRig(t, "{hold: 1m}", "")
			q := req("new.example", 443)
			var held []<-chan vocab.Reason
			for range 3 {
				held = append(held, r.hold(context.Background(), q))
			}
			p := r.waitWaiting(t, 3)
			if len(p) != 1 || p[0].Waiting != 3 || p[0].Requests != 3 {
				t.Fatalf("three held requests: got %+v, want one question with 3 waiting", p)
			}
			if _, err := r.b.Answer(p[0].ID, tt.answer); err != nil {
				t.Fatal(err)
			}
			for i, ch := range held {
				if got := <-ch; got != tt.wantReason {
					t.Errorf("held request %d: got %v, want %v", i, got, tt.wantReason)
				}
			}
			if d := r.decide(q); d.Reason != tt.wantAfter {
				t.Errorf("after the answer: Decide = %v %v, want %v", d.Verdict, d.Reason, tt.wantAfter)
			}
			if len(r.b.Pending()) != 0 {
				t.Errorf("question still open after its answer")
			}
			if _, err := r.b.Answer(p[0].ID, tt.answer); !errors.Is(err, ErrNoQuestion) {
				t.Errorf("second answer: got %v, want ErrNoQuestion", err)
			}
		})
	}
}

func TestHoldTimesOut(t *testing.T) {
	r := newRig(t, "{hold: 50ms}", "")
	q := req("slow.example", 443)
	reason, retry, detail := r.b.Hold(context.Background(), q, r.decide(q))
	if reason != vocab.ReasonApprovalPending || retry != RetryAfter || detail == "" {
		t.Errorf("got %v %v %q, want approval_pending, %v and a sentence", reason, retry, detail, RetryAfter)
	}
	p := r.b.Pending()
	if len(p) != 1 || p[0].Waiting != 0 {
		t.Fatalf("after the timeout: got %+v, want the question still open with nobody waiting", p)
	}
	// The answer comes later: the retry goes through.
	if _, err := r.b.Answer(p[0].ID, Answer{Kind: Once, By: "console"}); err != nil {
		t.Fatal(err)
	}
	if d := r.decide(q); d.Verdict != vocab.Allow {
		t.Errorf("retry after the answer: got %v %v, want allow", d.Verdict, d.Reason)
	}
}

func TestNotAskable(t *testing.T) {
	r := newRig(t, "{reasons: [not_allowlisted], hold: 1m}", "")
	for _, d := range []policy.Decision{
		{Verdict: vocab.Deny, Reason: vocab.ReasonPrivateAddress},
		{Verdict: vocab.Deny, Reason: vocab.ReasonRateLimited},
		{Verdict: vocab.Deny, Reason: vocab.ReasonSNIMismatch},
		{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest},
		{Verdict: vocab.Deny, Reason: vocab.ReasonPortNotAllowed}, // not listed in reasons
	} {
		if got, _, _ := r.b.Hold(context.Background(), req("x.example", 443), d); got != d.Reason {
			t.Errorf("Hold(%v) = %v, want %v at once", d.Reason, got, d.Reason)
		}
	}
	if n := len(r.b.Pending()); n != 0 {
		t.Errorf("%d questions raised for unaskable denials, want 0", n)
	}
}

// TestFloodIsBounded: one client asking for many names opens at most
// MaxOpenPerClient questions and sends at most that many messages.
func TestFloodIsBounded(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	n := &countingNotifier{}
	r.b.AddNotifier(n)
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := req(fmt.Sprintf("n%d.example", i%500), 443)
			r.b.Hold(context.Background(), q, r.decide(q))
		}()
	}
	wg.Wait()
	r.b.out.close()
	if got := len(r.b.Pending()); got != MaxOpenPerClient {
		t.Errorf("open questions: got %d, want %d", got, MaxOpenPerClient)
	}
	q := req("one-more.example", 443)
	if reason, _, detail := r.b.Hold(context.Background(), q, r.decide(q)); reason != vocab.ReasonNotAllowlisted || !strings.Contains(detail, "already has 5 questions open") {
		t.Errorf("over the cap: got %v %q, want not_allowlisted at once, saying why nobody was asked", reason, detail)
	}
	if got := n.count(); got > MaxOpenPerClient {
		t.Errorf("messages: got %d, want at most %d", got, MaxOpenPerClient)
	}
}

func TestGrantsPersistAndExpire(t *testing.T) {
	state := filepath.Join(t.TempDir(), "ask-grants.json")
	r := newRig(t, "{hold: 1ms}", state)
	q := req("keep.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	p := r.b.Pending()
	if _, err := r.b.Answer(p[0].ID, Answer{Kind: For, For: time.Hour, By: "telegram:42"}); err != nil {
		t.Fatal(err)
	}
	// A restart (a new Broker over the same file) keeps the grant.
	r2 := newRig(t, "{hold: 1ms}", state)
	if d := r2.decide(q); d.Verdict != vocab.Allow {
		t.Fatalf("after restart: got %v %v, want allow", d.Verdict, d.Reason)
	}
	g := r2.b.Grants()
	if len(g) != 1 || g[0].By != "telegram:42" || !g[0].Until.Equal(r.now.Load().Add(time.Hour)) {
		t.Errorf("grants after restart: got %+v", g)
	}
	r2.advance(time.Hour)
	r2.b.expire()
	if d := r2.decide(q); d.Verdict != vocab.Deny {
		t.Errorf("after expiry: got %v %v, want deny", d.Verdict, d.Reason)
	}
	r3 := newRig(t, "{hold: 1ms}", state)
	if len(r3.b.Grants()) != 0 {
		t.Errorf("expired grant came back after restart: %+v", r3.b.Grants())
	}
}

func TestBadAnswers(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	q := req("x.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	id := r.b.Pending()[0].ID
	for _, a := range []Answer{{Kind: For}, {Kind: For, For: -time.Hour}, {Kind: "maybe"}} {
		if _, err := r.b.Answer(id, a); !errors.Is(err, ErrBadAnswer) {
			t.Errorf("Answer(%+v): got %v, want ErrBadAnswer", a, err)
		}
	}
	if _, err := r.b.Answer("nope", Answer{Kind: Once}); !errors.Is(err, ErrNoQuestion) {
		t.Errorf("unknown id: got %v, want ErrNoQuestion", err)
	}
}

func TestQuestionsExpire(t *testing.T) {
	r := newRig(t, "{hold: 1ms, open_for: 1m}", "")
	q := req("x.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	r.advance(2 * time.Minute)
	r.b.expire()
	if n := len(r.b.Pending()); n != 0 {
		t.Errorf("after open_for: %d questions open, want 0", n)
	}
}

type countingNotifier struct {
	mu sync.Mutex
	ms []Message
}

func (c *countingNotifier) Name() string { return "count" }
func (c *countingNotifier) Notify(_ context.Context, m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Kind == "question" {
		c.ms = append(c.ms, m)
	}
	return nil
}
func (c *countingNotifier) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ms)
}

// TestOnceLapses: after its grace period an "allow once" admits no new
// request but keeps its connections open for OnceKeep.
func TestOnceLapses(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	q := req("once.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	if _, err := r.b.Answer(r.b.Pending()[0].ID, Answer{Kind: Once, By: "cli"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		after      time.Duration
		newReq     vocab.Verdict
		openConn   vocab.Verdict
		listedUsed int
	}{
		{time.Second, vocab.Allow, vocab.Allow, 1},
		{OnceGrace, vocab.Deny, vocab.Allow, 0},
		{OnceKeep, vocab.Deny, vocab.Deny, 0},
	}
	for _, tt := range tests {
		r.advance(tt.after)
		r.b.expire()
		p := r.cur.Load()
		if got := p.Decide(q).Verdict; got != tt.newReq {
			t.Errorf("+%v: new request %v, want %v", tt.after, got, tt.newReq)
		}
		if got := p.DecideOpen(q).Verdict; got != tt.openConn {
			t.Errorf("+%v: open connection %v, want %v", tt.after, got, tt.openConn)
		}
		if got := len(r.b.Grants()); got != tt.listedUsed {
			t.Errorf("+%v: %d grants listed, want %d", tt.after, got, tt.listedUsed)
		}
	}
}

// TestNotificationRate: many clients each opening a question reach the
// channels at most notifyBurst times at once; the rest stay listed.
func TestNotificationRate(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	n := &countingNotifier{}
	r.b.AddNotifier(n)
	for i := range 40 {
		q := policy.Request{Client: netip.AddrFrom4([4]byte{172, 20, 1, byte(i)}), Host: "same.example", Port: 443, Proto: vocab.ProtoConnect}
		r.b.Hold(context.Background(), q, r.decide(q))
	}
	r.b.out.close()
	if got := len(r.b.Pending()); got != 40 {
		t.Errorf("open questions: %d, want 40 (one per client)", got)
	}
	if got := n.count(); got != notifyBurst {
		t.Errorf("messages: %d, want %d", got, notifyBurst)
	}
	notified := 0
	for _, q := range r.b.Pending() {
		if q.Notified {
			notified++
		}
	}
	if notified != notifyBurst {
		t.Errorf("questions marked notified: %d, want %d", notified, notifyBurst)
	}
}

// TestAlwaysFallsBack: when policy.yaml cannot be edited the answer says so
// and grants the destination for AlwaysFallback instead.
func TestAlwaysFallsBack(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	r.b.cfg.Always = func(string, uint16, string, time.Time) error {
		return fmt.Errorf("policy file is not writable: %w", syscall.EROFS)
	}
	q := req("ro.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	out, err := r.b.Answer(r.b.Pending()[0].ID, Answer{Kind: Always, By: "cli"})
	if err != nil || !strings.Contains(out, "could not edit policy.yaml") || !strings.Contains(out, "read-only file system") {
		t.Errorf("answer: %q %v, want it to say policy.yaml could not be edited and why", out, err)
	}
	g := r.b.Grants()
	if len(g) != 1 || g[0].Kind != "for" || !g[0].Until.Equal(r.now.Load().Add(AlwaysFallback)) {
		t.Errorf("fallback grant: %+v, want one for %v", g, AlwaysFallback)
	}
	if d := r.decide(q); d.Verdict != vocab.Allow {
		t.Errorf("after the fallback: %v %v", d.Verdict, d.Reason)
	}
}

// TestOneAnswerAtATime: while an "always" answer edits policy.yaml, a
// second answer to the same question (another operator's deny) is refused
// rather than recorded against a file that now grants the host.
func TestOneAnswerAtATime(t *testing.T) {
	r := newRig(t, "{hold: 1ms}", "")
	editing, release := make(chan struct{}), make(chan struct{})
	r.b.cfg.Always = func(string, uint16, string, time.Time) error {
		close(editing)
		<-release
		return nil
	}
	q := req("twice.example", 443)
	r.b.Hold(context.Background(), q, r.decide(q))
	id := r.b.Pending()[0].ID
	done := make(chan error, 1)
	go func() {
		_, err := r.b.Answer(id, Answer{Kind: Always, By: "telegram:1"})
		done <- err
	}()
	<-editing
	if _, err := r.b.Answer(id, Answer{Kind: Deny, By: "telegram:2"}); !errors.Is(err, ErrNoQuestion) {
		t.Errorf("second answer while the first is applied: %v, want ErrNoQuestion", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first answer: %v", err)
	}
	for _, g := range r.b.Grants() {
		if g.Deny {
			t.Errorf("a deny was recorded beside the always: %+v", g)
		}
	}
}
