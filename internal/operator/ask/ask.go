// Package ask owns asking a person about a denied destination (policy
// ask:): one pending question per (client, host, port), the requests held
// while it is open, the answers (once, for a while, always, deny), the
// standing grants kept in a state file, and the fan-out of questions and
// events to the notification channels.
package ask

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
)

// Bounds that keep a flooding agent from flooding the operator. They are
// constants, not knobs: a person cannot usefully answer more.
const (
	// MaxOpenPerClient is how many questions one client may have open; a
	// denial beyond it is refused at once, as without ask:.
	MaxOpenPerClient = 5
	// OnceGrace is how long "allow once" also lets new requests to the
	// same destination through: a client retrying after a timeout, or
	// the second connection of the same fetch.
	OnceGrace = time.Minute
	// OnceKeep is how long the connections an "allow once" let through
	// are kept open after its grace period (a reload or a lapsed grant
	// would otherwise cut a long download it allowed).
	OnceKeep = 24 * time.Hour
	// AlwaysFallback is the grant given when "always" cannot edit
	// policy.yaml (read-only, say).
	AlwaysFallback = 24 * time.Hour
	// RetryAfter is what a request that timed out waiting is told.
	RetryAfter = 30 * time.Second
	// MaxFor bounds "allow for a duration".
	MaxFor = 366 * 24 * time.Hour
)

// Errors callers branch on.
var (
	ErrNoQuestion = errors.New("no such open question")
	ErrBadAnswer  = errors.New("bad answer")
	ErrReadOnly   = errors.New("policy file cannot be edited")
)

// Kind is what a person answered.
type Kind string

// Answers.
const (
	Once   Kind = "once"
	For    Kind = "for"
	Always Kind = "always"
	Deny   Kind = "deny"
)

// ParseKind is the inverse of Kind's string.
func ParseKind(s string) (Kind, bool) {
	k := Kind(s)
	switch k {
	case Once, For, Always, Deny:
		return k, true
	}
	return "", false
}

// Answer is one person's reply to a question.
type Answer struct {
	Kind Kind
	For  time.Duration // Kind For only
	By   string        // who: "telegram:123", "cli", "console", ...
}

// Question is an open question as shown to people and channels.
type Question struct {
	ID       string    `json:"id"`
	Client   string    `json:"client"`
	Host     string    `json:"host"`
	Port     uint16    `json:"port"`
	Proto    string    `json:"proto"`
	Reason   string    `json:"reason"`
	Asked    time.Time `json:"asked"`
	Expires  time.Time `json:"expires"`
	Waiting  int       `json:"waiting"`  // requests held on it right now
	Requests int       `json:"requests"` // requests that asked it so far
	Notified bool      `json:"notified"` // sent to the channels (false when rate limited)
}

// Target is host:port.
func (q Question) Target() string { return net.JoinHostPort(q.Host, strconv.Itoa(int(q.Port))) }

// Config wires a Broker.
type Config struct {
	// Policy returns the current policy (its ask: section and Askable).
	Policy func() *policy.Policy
	// StatePath is the grants file; "" keeps grants in memory only.
	StatePath string
	// Apply installs the compiled grants in the policy every edge reads.
	Apply func(*policy.Overlay)
	// Always appends an allow entry for host:port to policy.yaml and
	// reloads it; an error wrapping ErrReadOnly (or nil Always) falls back
	// to a grant for AlwaysFallback.
	Always func(host string, port uint16, by string, at time.Time) error
	// Recorder gets an ask entry in the decision log for every question
	// raised, answered or expired; nil discards.
	Recorder declog.Recorder
	// Logger is the operational log; nil uses slog.Default().
	Logger *slog.Logger
	// Clock is nil for time.Now.
	Clock func() time.Time
}

type qkey struct {
	client netip.Addr
	host   string
	port   uint16
}

type question struct {
	Question
	proto   vocab.Proto
	key     qkey
	done    chan struct{} // closed when answered or expired
	answer  Answer        // set before done closes
	claimed bool          // an answer is being applied; guarded by Broker.mu
}

// Broker holds the open questions and the standing grants. Create it with
// New; it is safe for concurrent use.
type Broker struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
	out *fanout

	mu        sync.Mutex
	open      map[qkey]*question
	byID      map[string]*question
	perClient map[netip.Addr]int
	grants    []policy.Grant
	wake      chan struct{}
	saveMu    sync.Mutex // orders writes of the grants file
}

// New builds a Broker and loads the grants file. A grants file that cannot
// be read is set aside (renamed *.bad) and logged; egressd then starts
// with no grants, which is closed, not open.
func New(cfg Config) *Broker {
	b := &Broker{cfg: cfg, log: cfg.Logger, now: cfg.Clock,
		open: map[qkey]*question{}, byID: map[string]*question{}, perClient: map[netip.Addr]int{},
		wake: make(chan struct{}, 1)}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.cfg.Recorder == nil {
		b.cfg.Recorder = declog.Discard{}
	}
	b.out = newFanout(b.log)
	if cfg.StatePath != "" {
		g, err := loadState(cfg.StatePath, b.now())
		if err != nil {
			bad := cfg.StatePath + ".bad"
			rerr := renameAside(cfg.StatePath, bad)
			b.log.Error("operator grants unreadable: set aside, starting with none", "file", cfg.StatePath, "moved_to", bad, "error", err, "move_error", rerr)
		}
		b.grants = g
	}
	b.applyLocked()
	return b
}

// AddNotifier sends questions, answers and events to n from now on.
func (b *Broker) AddNotifier(n Notifier) { b.out.add(n) }

// Hold is the proxy's hook: for an askable denial it raises (or joins)
// the question about req and waits up to ask.hold for the answer. It
// returns ReasonNone when the request should be decided again (a person
// allowed it), ReasonOperatorDenied when a person refused it, and
// ReasonApprovalPending with a Retry-After and a sentence for the body
// when nobody answered in time. A denial that is not askable, or a client
// at MaxOpenPerClient, gets d.Reason back at once.
func (b *Broker) Hold(ctx context.Context, req policy.Request, d policy.Decision) (vocab.Reason, time.Duration, string) {
	pol := b.cfg.Policy()
	if d.Verdict != vocab.Deny || !pol.Askable(d.Reason) || pol.Config().Ask == nil {
		return d.Reason, 0, ""
	}
	a := pol.Config().Ask
	q, snap := b.raise(req, d, a.OpenFor)
	if q == nil {
		return d.Reason, 0, fmt.Sprintf("not put to a person: this client already has %d questions open", MaxOpenPerClient)
	}
	defer b.leave(q)
	t := time.NewTimer(a.Hold)
	defer t.Stop()
	select {
	case <-q.done:
		if q.answer.Kind == Deny {
			return vocab.ReasonOperatorDenied, 0, "a person refused " + snap.Target()
		}
		if q.answer.Kind == "" { // expired unanswered while held: cannot happen with open_for >= hold
			return vocab.ReasonApprovalPending, RetryAfter, pendingDetail(snap)
		}
		return vocab.ReasonNone, 0, ""
	case <-t.C:
	case <-ctx.Done():
	}
	return vocab.ReasonApprovalPending, RetryAfter, pendingDetail(snap)
}

func pendingDetail(q Question) string {
	return fmt.Sprintf("a person was asked at %s to allow %s (question %s); retry in %ds or once they answer, the question stays open until %s",
		q.Asked.UTC().Format(time.TimeOnly+"Z"), q.Target(), q.ID, int(RetryAfter.Seconds()), q.Expires.UTC().Format(time.TimeOnly+"Z"))
}

// raise joins the open question for req's (client, host, port) or opens
// one; nil when the client is at its cap. The Question is a copy taken
// under the lock.
func (b *Broker) raise(req policy.Request, d policy.Decision, openFor time.Duration) (*question, Question) {
	name, ip, err := policy.NormalizeHost(req.Host)
	if err != nil {
		return nil, Question{}
	}
	if ip.IsValid() {
		name = ip.String()
	}
	k := qkey{client: req.Client, host: name, port: req.Port}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.open[k]; q != nil {
		q.Waiting++
		q.Requests++
		return q, q.Question
	}
	if b.perClient[k.client] >= MaxOpenPerClient {
		return nil, Question{}
	}
	q := &question{key: k, proto: req.Proto, done: make(chan struct{})}
	q.Question = Question{ID: b.newIDLocked(), Client: clientString(req.Client), Host: name, Port: req.Port,
		Proto: req.Proto.String(), Reason: d.Reason.String(), Asked: now, Expires: now.Add(openFor), Waiting: 1, Requests: 1}
	q.Notified = b.out.question(q.Question)
	b.open[k] = q
	b.byID[q.ID] = q
	b.perClient[k.client]++
	b.kick()
	b.log.Info("asked a person", "question", q.ID, "client", q.Client, "host", name, "port", req.Port, "notified", q.Notified)
	b.record(q, vocab.Deny, vocab.ReasonApprovalPending, "question "+q.ID+" asked")
	return q, q.Question
}

// record writes q's ask entry to the decision log: what happened to the
// question, in the Rule column.
func (b *Broker) record(q *question, v vocab.Verdict, r vocab.Reason, what string) {
	b.cfg.Recorder.Record(declog.Entry{Time: b.now(), Event: vocab.EventAsk, Client: q.Client, Proto: q.proto,
		Host: q.Host, Port: q.Port, Verdict: v, Reason: r, Rule: what})
}

func (b *Broker) leave(q *question) {
	b.mu.Lock()
	q.Waiting--
	b.mu.Unlock()
}

func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.Unmap().String()
}

// newIDLocked is a short random question ID (fits callback_data easily).
func (b *Broker) newIDLocked() string {
	for {
		var r [4]byte
		_, _ = rand.Read(r[:])
		id := hex.EncodeToString(r[:])
		if _, taken := b.byID[id]; !taken {
			return id
		}
	}
}

// Pending lists the open questions, oldest first.
func (b *Broker) Pending() []Question {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Question, 0, len(b.byID))
	for _, q := range b.byID {
		out = append(out, q.Question)
	}
	slices.SortFunc(out, func(x, y Question) int { return x.Asked.Compare(y.Asked) })
	return out
}

// Grants lists the standing answers (allows and remembered denies) that
// have not expired, soonest expiry first; an "allow once" past its grace
// period, which only keeps its connections open, is not listed.
func (b *Broker) Grants() []policy.Grant {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.DeleteFunc(slices.Clone(b.grants), func(g policy.Grant) bool { return g.KeepOpen })
	slices.SortFunc(out, func(x, y policy.Grant) int { return x.Until.Compare(y.Until) })
	return out
}

// Event sends a notice (budget, reload, restart) to every channel.
func (b *Broker) Event(kind EventKind, text string) {
	b.out.event(kind, text)
}

func (b *Broker) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}
