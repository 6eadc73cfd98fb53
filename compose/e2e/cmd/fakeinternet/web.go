package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// site answers every host: a page naming what it saw, and the fake model
// provider under any path ending in /chat/completions.
type site struct {
	rec    *recorder
	apiKey string
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.rec.request(Request{Host: r.Host, Method: r.Method, Path: r.URL.Path, TLS: r.TLS != nil,
		From: r.RemoteAddr, Authorization: r.Header.Get("Authorization")})
	if strings.HasSuffix(r.URL.Path, "/chat/completions") {
		s.chat(w, r)
		return
	}
	fmt.Fprintf(w, "FAKEINTERNET host=%s path=%s tls=%v\n", r.Host, r.URL.Path, r.TLS != nil)
}

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

const (
	promptTokens     = 11
	completionTokens = 7
	reply            = "hello from the fake provider"
)

// chat is an OpenAI Chat Completions endpoint that only accepts the real
// key: an agent token reaching it would mean the gateway did not swap it.
func (s *site) chat(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if s.apiKey == "" || r.Header.Get("Authorization") != "Bearer "+s.apiKey {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"invalid api key","type":"invalid_request_error","code":"invalid_api_key"}}`)
		return
	}
	var req chatRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Model == "" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`)
		return
	}
	usage := map[string]any{"prompt_tokens": promptTokens, "completion_tokens": completionTokens,
		"total_tokens": promptTokens + completionTokens}
	if !req.Stream {
		json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-e2e", "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": reply}}},
			"usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(v map[string]any) {
		v["id"], v["object"], v["model"] = "chatcmpl-e2e", "chat.completion.chunk", req.Model
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	for _, word := range strings.Fields(reply) {
		chunk(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": word + " "}}}})
	}
	chunk(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "stop"}}})
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		chunk(map[string]any{"choices": []any{}, "usage": usage})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}
