package telegram

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
)

// Answerer applies an answer; *ask.Broker is one.
type Answerer interface {
	Answer(id string, a ask.Answer) (string, error)
}

// Config wires a Bot.
type Config struct {
	API       string // base URL, e.g. https://api.telegram.org
	Token     string
	Operators []int64
	// HTTP makes the calls; egressd passes a client that resolves, checks
	// and dials through safedial. nil = a plain client (tests only).
	HTTP *http.Client
	// Broker receives the operators' answers.
	Broker Answerer
	// PollTimeout is getUpdates' long-poll timeout; 0 = 50s.
	PollTimeout time.Duration
	// Logger is the operational log; nil uses slog.Default().
	Logger *slog.Logger
}

// Bot is an ask.Notifier and the poller of button presses.
type Bot struct {
	cfg Config
	c   *client
	log *slog.Logger

	mu   sync.Mutex
	sent map[string][]message // question ID → the messages asking it
}

// New builds a Bot; Run polls, AddNotifier sends.
func New(cfg Config) *Bot {
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 50 * time.Second
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{}
	}
	// A long poll answers within its timeout; allow that plus a margin.
	hc2 := *hc
	hc2.Timeout = cfg.PollTimeout + 30*time.Second
	b := &Bot{cfg: cfg, c: &client{api: strings.TrimSuffix(cfg.API, "/"), token: cfg.Token, hc: &hc2},
		log: cfg.Logger, sent: map[string][]message{}}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b
}

// Name is the channel's name in logs.
func (b *Bot) Name() string { return "telegram" }

// Callback data is "<verb>:<question id>", far under Telegram's 64 bytes.
var verbs = []struct {
	data, label string
	answer      ask.Answer
}{
	{"o", "Allow once", ask.Answer{Kind: ask.Once}},
	{"h", "Allow 1h", ask.Answer{Kind: ask.For, For: time.Hour}},
	{"a", "Always", ask.Answer{Kind: ask.Always}},
	{"d", "Deny", ask.Answer{Kind: ask.Deny}},
}

func keyboard(id string) inlineKeyboard {
	var row []button
	for _, v := range verbs {
		row = append(row, button{Text: v.label, CallbackData: v.data + ":" + id})
	}
	return inlineKeyboard{InlineKeyboard: [][]button{row[:2], row[2:]}}
}

// Notify sends a question (with buttons) or an event to every operator's
// private chat, and edits a question's messages once it is answered. No
// parse_mode is set: Telegram shows the text as written, so a host name
// cannot carry markup.
func (b *Bot) Notify(ctx context.Context, m ask.Message) error {
	switch m.Kind {
	case "question":
		return b.sendQuestion(ctx, m)
	case "answered":
		return b.editAnswered(ctx, m)
	}
	var errs []string
	for _, op := range b.cfg.Operators {
		if err := b.c.call(ctx, "sendMessage", map[string]any{"chat_id": op, "text": m.Text}, nil); err != nil {
			errs = append(errs, err.Error())
		}
	}
	return joinErrs(errs)
}

func (b *Bot) sendQuestion(ctx context.Context, m ask.Message) error {
	var errs []string
	for _, op := range b.cfg.Operators {
		var sent message
		err := b.c.call(ctx, "sendMessage", map[string]any{
			"chat_id": op, "text": m.Text, "reply_markup": keyboard(m.Question.ID),
		}, &sent)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		b.mu.Lock()
		b.sent[m.Question.ID] = append(b.sent[m.Question.ID], sent)
		b.mu.Unlock()
	}
	return joinErrs(errs)
}

func (b *Bot) editAnswered(ctx context.Context, m ask.Message) error {
	b.mu.Lock()
	msgs := b.sent[m.Question.ID]
	delete(b.sent, m.Question.ID)
	b.mu.Unlock()
	var errs []string
	for _, s := range msgs {
		err := b.c.call(ctx, "editMessageText", map[string]any{
			"chat_id": s.Chat.ID, "message_id": s.MessageID, "text": ask.QuestionText(*m.Question) + "\n→ " + m.Text,
		}, nil)
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	return joinErrs(errs)
}

func joinErrs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

// Run long-polls getUpdates until ctx ends, backing off after errors.
func (b *Bot) Run(ctx context.Context) {
	var offset int64
	backoff := time.Second
	for ctx.Err() == nil {
		var ups []update
		err := b.c.call(ctx, "getUpdates", map[string]any{
			"offset": offset, "timeout": int(b.cfg.PollTimeout / time.Second), "allowed_updates": []string{"callback_query"},
		}, &ups)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("telegram poll failed; retrying", "error", err, "in", backoff.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		for _, u := range ups {
			offset = max(offset, u.UpdateID+1)
			if u.CallbackQuery != nil {
				b.press(ctx, u.CallbackQuery)
			}
		}
	}
}

// press handles one button press: only operators' presses answer.
func (b *Bot) press(ctx context.Context, cq *callbackQuery) {
	reply := func(text string) {
		if len(text) > 200 { // the Bot API's limit for a callback answer
			text = text[:197] + "..."
		}
		if err := b.c.call(ctx, "answerCallbackQuery", map[string]any{"callback_query_id": cq.ID, "text": text}, nil); err != nil {
			b.log.Warn("telegram answerCallbackQuery failed", "error", err)
		}
	}
	if !slices.Contains(b.cfg.Operators, cq.From.ID) {
		b.log.Warn("telegram: a button press from a user who is not an operator was ignored", "user", cq.From.ID)
		reply("You are not an operator of this egressd.")
		return
	}
	verb, id, ok := strings.Cut(cq.Data, ":")
	i := slices.IndexFunc(verbs, func(v struct {
		data, label string
		answer      ask.Answer
	}) bool {
		return v.data == verb
	})
	if !ok || i < 0 {
		reply("Unknown button.")
		return
	}
	a := verbs[i].answer
	a.By = "telegram:" + strconv.FormatInt(cq.From.ID, 10)
	out, err := b.cfg.Broker.Answer(id, a)
	if err != nil {
		reply(err.Error())
		return
	}
	reply(out)
}
