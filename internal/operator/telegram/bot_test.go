package telegram

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/operator/telegram/telegramtest"
)

// TestErrorsNeverCarryTheToken: the token is in every URL; neither a
// transport error nor an API error may show it.
func TestErrorsNeverCarryTheToken(t *testing.T) {
	const token = "999:SECRET-token"
	tg := telegramtest.Start(t, "other-token")
	for _, api := range []string{tg.URL, "https://127.0.0.1:1"} { // API error (401), then connection refused
		c := &client{api: api, token: token, hc: &http.Client{Timeout: 5 * time.Second}}
		err := c.call(context.Background(), "getMe", map[string]any{}, nil)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: got %v, want an error without the token", api, err)
		}
	}
}

func TestKeyboardFitsCallbackData(t *testing.T) {
	kb := keyboard(strings.Repeat("f", 8))
	n := 0
	for _, row := range kb.InlineKeyboard {
		for _, b := range row {
			n++
			if len(b.CallbackData) > 64 || b.Text == "" {
				t.Errorf("button %+v: callback_data over 64 bytes or no label", b)
			}
		}
	}
	if n != 4 {
		t.Errorf("buttons: got %d, want once, 1h, always, deny", n)
	}
}

type recordAnswers struct{ got []ask.Answer }

func (r *recordAnswers) Answer(id string, a ask.Answer) (string, error) {
	if id != "abcd1234" {
		return "", errors.New("no such open question")
	}
	r.got = append(r.got, a)
	return "done", nil
}

func TestPress(t *testing.T) {
	tg := telegramtest.Start(t, "1:t")
	rec := &recordAnswers{}
	b := New(Config{API: tg.URL, Token: "1:t", Operators: []int64{42}, HTTP: tg.Client(), Broker: rec})
	for _, tt := range []struct {
		from int64
		data string
		want string // answerCallbackQuery text
	}{
		{7, "o:abcd1234", "You are not an operator of this egressd."},
		{42, "x:abcd1234", "Unknown button."},
		{42, "nonsense", "Unknown button."},
		{42, "o:ffff0000", "no such open question"},
		{42, "h:abcd1234", "done"},
	} {
		b.press(context.Background(), &callbackQuery{ID: "q", From: user{ID: tt.from}, Data: tt.data})
		ans := tg.Answered()
		if got, _ := ans[len(ans)-1]["text"].(string); got != tt.want {
			t.Errorf("press %d %q: answered %q, want %q", tt.from, tt.data, got, tt.want)
		}
	}
	if len(rec.got) != 1 || rec.got[0].Kind != ask.For || rec.got[0].For != time.Hour || rec.got[0].By != "telegram:42" {
		t.Errorf("answers reaching the broker: %+v, want one allow for 1h by telegram:42", rec.got)
	}
}
