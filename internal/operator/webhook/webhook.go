// Package webhook posts ask: questions and egressd's events as signed JSON:
// one POST per message, its body signed with HMAC-SHA256 of a shared
// secret, with a "text" (Slack, Mattermost) and "content" (Discord) field
// so that chat receivers show it as it is.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-Egressd-Signature"

// Payload is the JSON body of every POST.
type Payload struct {
	Text     string        `json:"text"`    // for Slack-style receivers
	Content  string        `json:"content"` // for Discord-style receivers
	Kind     string        `json:"kind"`    // question, answered, budget_warn, budget_cap, reload_failed, crash_charged
	Time     time.Time     `json:"time"`    // when egressd sent it; reject old ones to stop replays
	Question *ask.Question `json:"question,omitempty"`
	Answer   *AnswerInfo   `json:"answer,omitempty"`
}

// AnswerInfo is how a question was answered.
type AnswerInfo struct {
	Kind string `json:"kind"`
	For  string `json:"for,omitempty"`
	By   string `json:"by"`
}

// Hook is an ask.Notifier posting to one URL.
type Hook struct {
	url    string
	secret []byte
	hc     *http.Client
}

// New builds a Hook; hc makes the calls (egressd passes one that dials
// through safedial).
func New(rawURL string, secret []byte, hc *http.Client) *Hook {
	return &Hook{url: rawURL, secret: secret, hc: hc}
}

// Name is the channel's name in logs.
func (h *Hook) Name() string { return "webhook" }

// Sign is the signature header value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header value in constant time, for receivers
// written in Go (and for the tests).
func Verify(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// Notify posts m. A question's text says how to answer it, since a
// webhook cannot carry buttons back.
func (h *Hook) Notify(ctx context.Context, m ask.Message) error {
	p := Payload{Text: m.Text, Kind: m.Kind, Time: m.Time.UTC(), Question: m.Question}
	if m.Kind == "question" && m.Question != nil {
		p.Text += " Answer with: egressd approve " + m.Question.ID + " [--for 1h | --always], or egressd deny " + m.Question.ID + "."
	}
	if a := m.Answer; a != nil {
		p.Answer = &AnswerInfo{Kind: string(a.Kind), By: a.By}
		if a.Kind == ask.For {
			p.Answer.For = a.For.String()
		}
	}
	p.Content = p.Text
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: bad url")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "egressd-webhook")
	req.Header.Set(SignatureHeader, Sign(h.secret, body))
	resp, err := h.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // the URL may hold a secret path
			err = ue.Err
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: receiver answered %s", resp.Status)
	}
	return nil
}
