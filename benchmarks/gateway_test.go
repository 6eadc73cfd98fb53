package benchmarks

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// chatChunk is one real-sized Chat Completions stream event (~220 bytes
// for a few tokens, as providers send them).
const chatChunk = `data: {"id":"chatcmpl-9x1","object":"chat.completion.chunk","created":1732700000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}` + "\n\n"

const chatUsage = `data: {"id":"chatcmpl-9x1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":35,"total_tokens":1235,"prompt_tokens_details":{"cached_tokens":1024}}}` + "\n\ndata: [DONE]\n\n"

// chatStream is a whole stream of n content events plus the usage event.
func chatStream(n int) []byte {
	return []byte(strings.Repeat(chatChunk, n) + chatUsage)
}

// fakeProvider streams events of chatStream(events), flushing every
// flushEvery events, on plain HTTP on loopback so that direct and
// gateway runs pay the same upstream cost.
func fakeProvider(b *testing.B, events, flushEvery int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := []byte(strings.Repeat(chatChunk, flushEvery))
		for sent := 0; sent < events; sent += flushEvery {
			w.Write(chunk)
			w.(http.Flusher).Flush()
		}
		w.Write([]byte(chatUsage))
	}))
	b.Cleanup(srv.Close)
	return srv
}

// gatewayFront puts the gateway, wired as the daemon wires it, in front
// of upstream and returns its base URL for the provider "p".
func gatewayFront(b *testing.B, upstream string) string {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := meter.Open(policy.BudgetConfig{
		CapUSD: 1e9, Ledger: filepath.Join(b.TempDir(), "ledger.json"),
		Prices: map[string]policy.Price{"gpt-4o-mini": {Input: 0.15, Output: 0.6}},
	}, meter.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	provs := map[string]policy.ProviderConfig{"p": {Upstream: upstream, Format: "openai", APIKeyEnv: "K", ClientTokenEnv: "T"}}
	gw := gateway.New(gateway.Config{
		Providers: func() map[string]policy.ProviderConfig { return provs },
		Meter:     m, Env: func(k string) string { return map[string]string{"K": "sk-real", "T": "agent"}[k] }, Logger: quiet,
	})
	srv := httptest.NewServer(gw)
	b.Cleanup(srv.Close)
	b.Cleanup(gw.Close)
	return srv.URL + "/p"
}

// benchBody's max_tokens covers the bulk stream's 40,000 events (about
// 80,000 estimated output tokens): the fake provider ignores the limit, and
// with a smaller one the gateway's stream guard would cut the stream.
const benchBody = `{"model":"gpt-4o-mini","stream":true,"max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}`

// fetch sends one streaming call and returns the time to the first body
// byte and the bytes read.
func fetch(b *testing.B, c *http.Client, url string, buf []byte) (time.Duration, int64) {
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(benchBody))
	req.Header.Set("Authorization", "Bearer agent")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.ReadAtLeast(resp.Body, buf[:1], 1)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	ttfb := time.Since(start)
	rest, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	if err != nil {
		b.Fatal(err)
	}
	return ttfb, int64(n) + rest
}

// BenchmarkGatewayStreaming compares a stream fetched directly from the
// fake provider with the same stream through the gateway: ttfb-µs is the
// mean time to the first byte; MB/s is pass-through throughput.
func BenchmarkGatewayStreaming(b *testing.B) {
	shapes := []struct {
		name               string
		events, flushEvery int
	}{
		{"short-chat-40ev", 40, 1}, // a typical short answer, one flush per event
		{"bulk-40k-ev", 40000, 64}, // ~9 MB, throughput-bound
	}
	for _, sh := range shapes {
		up := fakeProvider(b, sh.events, sh.flushEvery)
		size := int64(len(chatStream(sh.events)))
		for _, route := range []struct{ name, url string }{{"direct", up.URL}, {"gateway", gatewayFront(b, up.URL)}} {
			b.Run(sh.name+"/"+route.name, func(b *testing.B) {
				c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
				defer c.CloseIdleConnections()
				buf := make([]byte, 32<<10)
				b.SetBytes(size)
				b.ReportAllocs()
				var ttfb time.Duration
				for b.Loop() {
					d, n := fetch(b, c, route.url, buf)
					if n != size {
						b.Fatalf("read %d bytes, want %d", n, size)
					}
					ttfb += d
				}
				b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N), "ttfb-µs")
			})
		}
	}
}

// BenchmarkSSEParse is the metering cost per streamed byte: the extractor
// over a real-shaped Chat Completions stream, fed in 4 KiB reads.
func BenchmarkSSEParse(b *testing.B) {
	for _, events := range []int{40, 4000} {
		stream := chatStream(events)
		b.Run(fmt.Sprintf("%dev", events), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				ex := meter.NewExtractor(meter.FormatOpenAI, true)
				for rest := stream; len(rest) > 0; {
					n := min(4096, len(rest))
					ex.Write(rest[:n])
					rest = rest[n:]
				}
				if u, state := ex.Result(); state != meter.UsageFinal || u.OutputTokens != 35 {
					b.Fatalf("got %+v state %d", u, state)
				}
			}
		})
	}
	b.Run("raw-parser-4000ev", func(b *testing.B) {
		stream := chatStream(4000)
		events := 0
		p := meter.SSEParser{OnEvent: func(_, _ []byte) { events++ }}
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		for b.Loop() {
			for rest := stream; len(rest) > 0; {
				n := min(4096, len(rest))
				p.Write(rest[:n])
				rest = rest[n:]
			}
		}
		if events == 0 || !bytes.Contains(stream, []byte("[DONE]")) {
			b.Fatal("no events parsed")
		}
	})
}
