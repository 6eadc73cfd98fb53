package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// part is one media part of a test body and what it should add.
type part struct {
	json   string
	tokens int64 // its per-part figure
}

func TestMediaTokens(t *testing.T) {
	b64 := strings.Repeat("QUFB", 5000) // 20,000 bytes: more than an image's figure already
	tests := []struct {
		name   string
		body   string // %s marks where the parts go, comma-joined
		parts  []part
		others int // parts found that add nothing
	}{
		{"text only", `{"model":"m","messages":[{"role":"user","content":"describe an image_url"}]}`, nil, 0},
		{"chat image by URL", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is it"},%s]}]}`,
			[]part{{`{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}}`, ImagePartTokens}}, 0},
		{"chat audio and file", `{"messages":[{"role":"user","content":[%s]}]}`,
			[]part{{`{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}`, AudioPartTokens},
				{`{"type":"file","file":{"file_id":"file-abc"}}`, DocumentPartTokens}}, 0},
		{"responses image and file", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},%s]}]}`,
			[]part{{`{"type":"input_image","image_url":"https://example.com/a.jpg"}`, ImagePartTokens},
				{`{"type":"input_file","file_id":"file-123"}`, DocumentPartTokens}}, 0},
		{"anthropic image and document by URL", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[%s]}]}`,
			[]part{{`{"type":"image","source":{"type":"url","url":"https://example.com/b.png"}}`, ImagePartTokens},
				{`{"type":"document","source":{"type":"url","url":"https://example.com/c.pdf"}}`, DocumentPartTokens}}, 0},
		{"image inside a tool result", `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[%s]}]}]}`,
			[]part{{`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0K"}}`, ImagePartTokens}}, 0},
		{"two images inside a tool result", `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[%s]}]}]}`,
			[]part{{`{"type":"image","source":{"type":"url","url":"https://example.com/1.png"}}`, ImagePartTokens},
				{`{"type":"image","source":{"type":"url","url":"https://example.com/2.png"}}`, ImagePartTokens}}, 0},
		{"openrouter video", `{"messages":[{"role":"user","content":[%s]}]}`,
			[]part{{`{"type":"video_url","video_url":{"url":"https://example.com/v.mp4"}}`, DocumentPartTokens}}, 0},
		{"type spelled in escapes and case", `{"messages":[{"content":[%s]}]}`,
			[]part{{`{"T\u0079pe":"IMAGE_\u0055RL","image_url":{"url":"u"}}`, ImagePartTokens}}, 0},
		{"payload key without a type", `{"messages":[{"content":[%s]}]}`,
			[]part{{`{"image_url":{"url":"https://example.com/d.png"}}`, ImagePartTokens}}, 0},
		{"inline base64 already costs more", `{"messages":[{"content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64 + `"}}]}]}`, nil, 1},
		{"type that is not a string", `{"messages":[{"type":5,"content":[{"type":null},{"type":["image"]}]}]}`, nil, 0},
		{"escaped quotes inside text", `{"messages":[{"content":"{\"type\":\"image_url\"}\\"},{"type":"text","text":"a\"b"}]}`, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, want := tt.body, int64(0)
			if len(tt.parts) > 0 {
				js := make([]string, len(tt.parts))
				for i, p := range tt.parts {
					js[i] = p.json
					want += p.tokens - (int64(len(p.json))+BytesPerInputToken-1)/BytesPerInputToken
				}
				body = strings.Replace(body, "%s", strings.Join(js, ","), 1)
			}
			if _, err := topLevel([]byte(body)); err != nil {
				t.Fatalf("test body is not valid: %v", err)
			}
			extra, n := mediaTokens([]byte(body))
			if extra != want || n != len(tt.parts)+tt.others {
				t.Errorf("got %d tokens from %d parts, want %d from %d", extra, n, want, len(tt.parts)+tt.others)
			}
		})
	}
}

func TestMediaTokensAllocations(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"` + strings.Repeat("words ", 2000) +
		`"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}`)
	if n := testing.AllocsPerRun(50, func() { mediaTokens(body) }); n > 0 {
		t.Errorf("mediaTokens allocates %v times on a plain body, want 0", n)
	}
}

// FuzzMediaTokens: no body crashes the scan, nothing is negative, and a
// part is an object.
func FuzzMediaTokens(f *testing.F) {
	f.Add([]byte(`{"messages":[{"content":[{"type":"image_url","image_url":{"url":"u"}}]}]}`))
	f.Add([]byte(`{"T\u0079pe":"IMAGE_\u0055RL"}`))
	f.Add([]byte(`]]}}{"type":"document"`))
	f.Add([]byte(`{"type":"image","x":"\\"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		extra, n := mediaTokens(body)
		if extra < 0 || n < 0 || n > bytes.Count(body, []byte("{")) {
			t.Fatalf("got %d tokens from %d parts for %q", extra, n, body)
		}
	})
}

// TestMediaPartsRaiseTheReservation: the same call is admitted as text and
// refused once it carries two images by URL, which its bytes do not show.
func TestMediaPartsRaiseTheReservation(t *testing.T) {
	// 8,000 image tokens at $3/M is $0.024; the text call reserves ~$0.0003.
	r := newRig(t, openRouterJSON(0.0001, 1, 1), withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.01 }),
		withPolicy(t, "allow: [{host: example.com}]\n"))
	text := `{"model":"anthropic/claude-sonnet-4.5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"compare"}%s]}]}`
	if resp := r.post("/openrouter/api/v1/chat/completions", strings.Replace(text, "%s", "", 1)); resp.StatusCode != 200 {
		t.Fatalf("text only: got %d, want 200", resp.StatusCode)
	}
	img := `,{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}`
	resp := r.post("/openrouter/api/v1/chat/completions", strings.Replace(text, "%s", img+img, 1))
	if body := readAll(t, resp); resp.StatusCode != http.StatusTooManyRequests || errType(t, body) != "budget_exceeded" {
		t.Errorf("with two images: got %d %s, want 429 budget_exceeded", resp.StatusCode, body)
	}
	if n := len(r.fake.requests()); n != 1 {
		t.Errorf("provider saw %d calls, want only the text one", n)
	}
}

// BenchmarkShapeBody is the per-request cost of reading a body before it
// is forwarded (parse, limits, media parts), which delays the first token.
func BenchmarkShapeBody(b *testing.B) {
	msg := `{"role":"user","content":[{"type":"text","text":"` + strings.Repeat("some words of context ", 40) +
		`"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}`
	for _, n := range []int{10, 200} {
		body := []byte(`{"model":"m","stream":true,"messages":[` + strings.TrimSuffix(strings.Repeat(msg+",", n), ",") + `]}`)
		b.Run(fmt.Sprintf("shape-%dmsg", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := shapeBody(body, kindChat); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("media-only-%dmsg", n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				mediaTokens(body)
			}
		})
	}
}
