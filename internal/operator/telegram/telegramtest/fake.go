// Package telegramtest is a fake Telegram Bot API on loopback TLS for
// tests: the methods egressd uses, shaped as the Bot API documents them
// ({"ok": true, "result": ...}, updates carrying callback_query {id, from,
// message, data}).
package telegramtest

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Sent is a message the bot sent or edited.
type Sent struct {
	Method    string
	ChatID    int64
	MessageID int64
	Text      string
	Buttons   []Button // sendMessage with an inline keyboard
}

// Button is one inline keyboard button.
type Button struct {
	Text         string `json:"text"`
	CallbackData string `json:"callback_data"`
}

// Server is the fake Bot API.
type Server struct {
	*httptest.Server
	Token  string
	CAFile string // PEM of the server's certificate, for ca_file

	mu       sync.Mutex
	nextMsg  int64
	nextUpd  int64
	updates  []map[string]any
	wake     chan struct{}
	sent     []Sent
	answered []map[string]any // answerCallbackQuery params
	changed  chan struct{}
}

// Start runs a fake Bot API for token until the test ends.
func Start(t testing.TB, token string) *Server {
	t.Helper()
	s := &Server{Token: token, wake: make(chan struct{}, 1), changed: make(chan struct{}, 1), nextMsg: 100, nextUpd: 5000}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	s.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func reply(w http.ResponseWriter, code int, v map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot"+s.Token+"/")
	if !ok {
		reply(w, 401, map[string]any{"ok": false, "error_code": 401, "description": "Unauthorized"})
		return
	}
	var p map[string]any
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		reply(w, 400, map[string]any{"ok": false, "error_code": 400, "description": "Bad Request: can't parse JSON"})
		return
	}
	switch rest {
	case "getUpdates":
		s.getUpdates(w, r, p)
	case "sendMessage", "editMessageText":
		s.message(w, rest, p)
	case "answerCallbackQuery":
		s.mu.Lock()
		s.answered = append(s.answered, p)
		s.mu.Unlock()
		s.signal()
		reply(w, 200, map[string]any{"ok": true, "result": true})
	default:
		reply(w, 404, map[string]any{"ok": false, "error_code": 404, "description": "Not Found"})
	}
}

func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request, p map[string]any) {
	offset, _ := p["offset"].(float64)
	timeout, _ := p["timeout"].(float64)
	deadline := time.After(time.Duration(timeout * float64(time.Second)))
	for {
		s.mu.Lock()
		var out []map[string]any
		for _, u := range s.updates {
			if u["update_id"].(int64) >= int64(offset) {
				out = append(out, u)
			}
		}
		s.mu.Unlock()
		if len(out) > 0 {
			reply(w, 200, map[string]any{"ok": true, "result": out})
			return
		}
		select {
		case <-s.wake:
		case <-deadline:
			reply(w, 200, map[string]any{"ok": true, "result": []any{}})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) message(w http.ResponseWriter, method string, p map[string]any) {
	chatID, _ := p["chat_id"].(float64)
	text, _ := p["text"].(string)
	if text == "" {
		reply(w, 400, map[string]any{"ok": false, "error_code": 400, "description": "Bad Request: message text is empty"})
		return
	}
	m := Sent{Method: method, ChatID: int64(chatID), Text: text}
	if kb, ok := p["reply_markup"].(map[string]any); ok {
		b, _ := json.Marshal(kb["inline_keyboard"])
		var rows [][]Button
		_ = json.Unmarshal(b, &rows)
		for _, row := range rows {
			m.Buttons = append(m.Buttons, row...)
		}
	}
	s.mu.Lock()
	if method == "sendMessage" {
		s.nextMsg++
		m.MessageID = s.nextMsg
	} else {
		id, _ := p["message_id"].(float64)
		m.MessageID = int64(id)
	}
	s.sent = append(s.sent, m)
	s.mu.Unlock()
	s.signal()
	reply(w, 200, map[string]any{"ok": true, "result": map[string]any{
		"message_id": m.MessageID, "date": time.Now().Unix(), "text": text,
		"chat": map[string]any{"id": m.ChatID, "type": "private"},
	}})
}

func (s *Server) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Press queues a button press by user on msg with callback data.
func (s *Server) Press(user int64, msg Sent, data string) {
	s.mu.Lock()
	s.nextUpd++
	s.updates = append(s.updates, map[string]any{
		"update_id": s.nextUpd,
		"callback_query": map[string]any{
			"id":            "cq" + time.Now().Format("150405.000000"),
			"from":          map[string]any{"id": user, "is_bot": false, "first_name": "Op"},
			"chat_instance": "ci",
			"data":          data,
			"message": map[string]any{"message_id": msg.MessageID, "date": time.Now().Unix(),
				"chat": map[string]any{"id": msg.ChatID, "type": "private"}, "text": msg.Text},
		},
	})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Sent returns every message sent or edited so far.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// Answered returns the answerCallbackQuery calls so far.
func (s *Server) Answered() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.answered...)
}

// WaitFor polls until cond holds on what was sent, or fails the test.
func (s *Server) WaitFor(t testing.TB, what string, cond func(sent []Sent, answered []map[string]any) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		if cond(s.Sent(), s.Answered()) {
			return
		}
		select {
		case <-s.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("telegram fake: %s: not within 10s; sent %+v", what, s.Sent())
		}
	}
}
