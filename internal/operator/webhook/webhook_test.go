package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
)

func TestNotifySigned(t *testing.T) {
	secret := []byte("s3cret")
	type got struct {
		body []byte
		sig  string
		ct   string
	}
	ch := make(chan got, 4)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- got{b, r.Header.Get(SignatureHeader), r.Header.Get("Content-Type")}
	}))
	defer srv.Close()
	h := New(srv.URL+"/hook", secret, srv.Client())
	q := ask.Question{ID: "abcd1234", Client: "172.20.0.5", Host: "evil.example", Port: 443, Proto: "connect", Reason: "not_allowlisted"}
	msgs := []ask.Message{
		{Kind: "question", Question: &q, Text: ask.QuestionText(q), Time: time.Now()},
		{Kind: "answered", Question: &q, Answer: &ask.Answer{Kind: ask.For, For: time.Hour, By: "cli:op"}, Text: "allowed", Time: time.Now()},
		{Kind: string(ask.EventBudgetWarn), Text: "egressd: spend passed 80% of the cap", Time: time.Now()},
	}
	for _, m := range msgs {
		if err := h.Notify(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		g := <-ch
		if !Verify(secret, g.body, g.sig) || Verify([]byte("other"), g.body, g.sig) || g.ct != "application/json" {
			t.Errorf("%s: signature %q content type %q", m.Kind, g.sig, g.ct)
		}
		var p Payload
		if err := json.Unmarshal(g.body, &p); err != nil {
			t.Fatal(err)
		}
		if p.Kind != m.Kind || p.Text == "" || p.Content != p.Text || !strings.HasPrefix(p.Text, m.Text) {
			t.Errorf("%s: payload %+v", m.Kind, p)
		}
		switch m.Kind {
		case "question":
			if !strings.Contains(p.Text, "egressd approve abcd1234") || p.Question == nil || p.Question.Host != "evil.example" {
				t.Errorf("question payload: %+v", p)
			}
		case "answered":
			if p.Answer == nil || p.Answer.Kind != "for" || p.Answer.For != "1h0m0s" || p.Answer.By != "cli:op" {
				t.Errorf("answer payload: %+v", p.Answer)
			}
		}
	}
}

func TestNotifyErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer srv.Close()
	err := New(srv.URL+"/secret-path", []byte("k"), srv.Client()).Notify(context.Background(), ask.Message{Kind: "budget_cap", Text: "x"})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("receiver refusing: got %v", err)
	}
	err = New("https://127.0.0.1:1/secret-path", []byte("k"), &http.Client{}).Notify(context.Background(), ask.Message{Kind: "budget_cap", Text: "x"})
	if err == nil || strings.Contains(err.Error(), "secret-path") {
		t.Errorf("unreachable receiver: got %v, want an error without the URL", err)
	}
}
