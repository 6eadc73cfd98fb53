package ask

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Notification rate: a burst of questions reaches the channels at once,
// then one a minute. Questions over the rate stay open (the console and
// `egressd pending` list them); only the message is skipped.
const (
	notifyBurst = 10
	notifyEvery = time.Minute
	// queueLen bounds what waits for one slow channel; beyond it messages
	// to that channel are dropped and logged.
	queueLen = 64
	// sendTimeout bounds one delivery.
	sendTimeout = 30 * time.Second
)

// EventKind names a notice that is not a question.
type EventKind string

// Events sent to the channels.
const (
	EventBudgetWarn   EventKind = "budget_warn"   // spend crossed budget.warn_at
	EventBudgetCap    EventKind = "budget_cap"    // spend reached the cap: metered calls refused
	EventReloadFailed EventKind = "reload_failed" // an edit of policy.yaml was refused
	EventCrashCharged EventKind = "crash_charged" // a restart charged reservations a crash left
)

// Message is what a channel receives: a new question, the outcome of one,
// or an event. Text is plain text for a person, complete on its own.
type Message struct {
	Kind     string    // "question", "answered", or an EventKind
	Question *Question // question and answered
	Answer   *Answer   // answered; nil when the question expired
	Text     string
	Time     time.Time
}

// Notifier is one channel (Telegram, a webhook). Notify must return within
// ctx; it is called from one goroutine per notifier, in order.
type Notifier interface {
	Name() string
	Notify(ctx context.Context, m Message) error
}

type fanout struct {
	log *slog.Logger
	lim *rate.Limiter

	mu   sync.Mutex
	subs []*sub
}

type sub struct {
	n    Notifier
	q    chan Message
	done chan struct{}
}

func newFanout(log *slog.Logger) *fanout {
	return &fanout{log: log, lim: rate.NewLimiter(rate.Every(notifyEvery), notifyBurst)}
}

func (f *fanout) add(n Notifier) {
	s := &sub{n: n, q: make(chan Message, queueLen), done: make(chan struct{})}
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	go s.run(f.log)
}

func (s *sub) run(log *slog.Logger) {
	defer close(s.done)
	for m := range s.q {
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		if err := s.n.Notify(ctx, m); err != nil {
			log.Warn("notification not delivered", "channel", s.n.Name(), "kind", m.Kind, "error", err)
		}
		cancel()
	}
}

// close stops every channel after what is queued.
func (f *fanout) close() {
	f.mu.Lock()
	subs := f.subs
	f.subs = nil
	f.mu.Unlock()
	for _, s := range subs {
		close(s.q)
		<-s.done
	}
}

func (f *fanout) send(m Message) {
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		select {
		case s.q <- m:
		default:
			f.log.Warn("notification dropped: channel is behind", "channel", s.n.Name(), "kind", m.Kind)
		}
	}
}

// question sends a new question unless over the rate; it reports whether
// it was sent (to at least the queue of each channel).
func (f *fanout) question(q Question) bool {
	f.mu.Lock()
	n := len(f.subs)
	f.mu.Unlock()
	if n == 0 || !f.lim.Allow() {
		return false
	}
	f.send(Message{Kind: "question", Question: &q, Text: QuestionText(q)})
	return true
}

// answered tells the channels how a question ended, so they can update
// what they showed. Questions never sent are not followed up either.
func (f *fanout) answered(q Question, a Answer, outcome string) {
	if !q.Notified {
		return
	}
	m := Message{Kind: "answered", Question: &q, Text: q.Target() + ": " + outcome}
	if a.Kind != "" {
		m.Answer = &a
		m.Text += " — by " + a.By
	}
	f.send(m)
}

func (f *fanout) event(kind EventKind, text string) {
	f.send(Message{Kind: string(kind), Text: text})
}

// QuestionText is the plain-text question a person reads.
func QuestionText(q Question) string {
	return "egressd: client " + q.Client + " wants " + q.Target() + " (" + q.Proto + ", " + q.Reason +
		"). Allow? Question " + q.ID + ", open until " + q.Expires.UTC().Format("15:04Z") + "."
}
