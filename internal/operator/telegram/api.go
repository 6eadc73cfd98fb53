// Package telegram is egressd's own operator bot: it sends ask: questions
// with inline buttons to the operators' private chats, long-polls the Bot
// API for their button presses (outbound only), accepts answers only from
// the configured operator user IDs, and edits each question to show how it
// ended.
package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponse bounds one Bot API answer (a getUpdates batch is at most
// 100 updates).
const maxResponse = 4 << 20

// apiResponse is the envelope of every Bot API answer.
type apiResponse struct {
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result"`
	Description string          `json:"description"`
	ErrorCode   int             `json:"error_code"`
}

// update is the part of an Update egressd reads.
type update struct {
	UpdateID      int64          `json:"update_id"`
	CallbackQuery *callbackQuery `json:"callback_query"`
}

type callbackQuery struct {
	ID      string   `json:"id"`
	From    user     `json:"from"`
	Message *message `json:"message"`
	Data    string   `json:"data"`
}

type user struct {
	ID int64 `json:"id"`
}

type message struct {
	MessageID int64 `json:"message_id"`
	Chat      chat  `json:"chat"`
}

type chat struct {
	ID int64 `json:"id"`
}

type button struct {
	Text         string `json:"text"`
	CallbackData string `json:"callback_data"`
}

type inlineKeyboard struct {
	InlineKeyboard [][]button `json:"inline_keyboard"`
}

// client calls Bot API methods. The token is part of every URL, so no
// error it returns ever carries a URL.
type client struct {
	api   string // https://api.telegram.org, no trailing slash
	token string
	hc    *http.Client
}

// call POSTs params as JSON to method and decodes result into out (nil
// to ignore it).
func (c *client) call(ctx context.Context, method string, params, out any) error {
	body, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("telegram %s: encode: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.api+"/bot"+c.token+"/"+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("telegram %s: bad api url", method)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("telegram %s: %w", method, withoutURL(err))
	}
	defer resp.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&r); err != nil {
		return fmt.Errorf("telegram %s: %s, unreadable answer", method, resp.Status)
	}
	if !r.OK {
		return fmt.Errorf("telegram %s: error %d: %s", method, r.ErrorCode, strings.ReplaceAll(r.Description, c.token, "<token>"))
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			return fmt.Errorf("telegram %s: result: %w", method, err)
		}
	}
	return nil
}

// withoutURL drops the *url.Error wrapper, whose text holds the URL and
// with it the bot token.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
