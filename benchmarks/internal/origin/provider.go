package origin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Provider limits, so a request cannot make the fake stream without end.
const (
	MaxChunks    = 1 << 20
	maxChunkSize = 4096
)

// StartProvider serves an OpenAI Chat Completions fake at any path ending
// in /chat/completions. It checks that the caller sent "Bearer <key>",
// which is how the benchmark proves the gateway injected the real key.
//
// Query parameters shape the answer: chunks (content events, default 16)
// and size (bytes of content per event, default 16). A streaming request
// gets one SSE event per chunk, each flushed as an LLM server flushes
// tokens, then a finish event, a usage event when stream_options
// .include_usage is set, and [DONE].
func StartProvider(addr, key string) (*Server, error) {
	return serveHTTP(addr, &provider{key: key})
}

type provider struct{ key string }

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+p.key {
		http.Error(w, `{"error":{"message":"bad key","type":"authentication_error"}}`, http.StatusUnauthorized)
		return
	}
	var req chatRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad json","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	chunks := queryInt(r, "chunks", 16, MaxChunks)
	size := queryInt(r, "size", 16, maxChunkSize)
	if !req.Stream {
		writeCompletion(w, req.Model, chunks, size)
		return
	}
	streamCompletion(w, req, chunks, size)
}

func queryInt(r *http.Request, name string, def, limit int) int {
	n, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil || n < 1 {
		return def
	}
	return min(n, limit)
}

func writeCompletion(w http.ResponseWriter, model string, chunks, size int) {
	content := strings.Repeat("x", chunks*size)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"chatcmpl-bench","object":"chat.completion","created":%d,"model":%q,`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`,
		time.Now().Unix(), model, content, tokens(chunks, size), tokens(chunks, size)+12)
}

func streamCompletion(w http.ResponseWriter, req chatRequest, chunks, size int) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	head := fmt.Sprintf(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":%d,"model":%q,`,
		time.Now().Unix(), req.Model)
	event := []byte(head + `"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", size) +
		`"},"finish_reason":null}],"usage":null}` + "\n\n")
	for range chunks {
		if _, err := w.Write(event); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	fmt.Fprint(w, head+`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`+"\n\n")
	if req.StreamOptions.IncludeUsage {
		fmt.Fprintf(w, head+`"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n",
			tokens(chunks, size), tokens(chunks, size)+12)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// tokens is the usage the fake reports: about four content bytes a token,
// as for English text.
func tokens(chunks, size int) int { return max(1, chunks*size/4) }
