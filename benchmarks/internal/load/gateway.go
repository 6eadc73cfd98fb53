package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// Chat is how to reach an OpenAI-shaped chat completions endpoint: the
// gateway's route or the fake provider itself.
type Chat struct {
	URL    string // full URL of .../chat/completions, without query
	Token  string // sent as Authorization: Bearer
	Model  string
	Client *http.Client
}

// NewChatClient returns a keep-alive client that never uses *_PROXY
// variables (the benchmark decides what is in the path).
func NewChatClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 4,
		DisableCompression:  true,
	}, Timeout: 60 * time.Second}
}

// post asks for a stream of chunks events of size content bytes each.
// max_tokens allows one token per content byte, above any estimate, so a
// metering gateway reserves enough and never cuts the stream.
func (c Chat) post(ctx context.Context, chunks, size int) (*http.Response, error) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"stream_options":{"include_usage":true},"max_tokens":%d,`+
		`"messages":[{"role":"user","content":"benchmark"}]}`, c.Model, chunks*size)
	url := fmt.Sprintf("%s?chunks=%d&size=%d", c.URL, chunks, size)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post %s: %w", c.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("post %s: status %d: %s", c.URL, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return resp, nil
}

var errNoDone = errors.New("stream ended without data: [DONE]")

// readStream reads an SSE body to its end, returning the time the first
// byte arrived and the bytes read; a stream without its [DONE] is an error.
func readStream(resp *http.Response, buf []byte) (first time.Time, n int64, err error) {
	defer resp.Body.Close()
	var tail []byte
	for {
		m, err := resp.Body.Read(buf)
		if m > 0 && first.IsZero() {
			first = time.Now()
		}
		n += int64(m)
		if m > 0 { // keep the last 32 bytes seen, across reads
			tail = append(tail, buf[max(0, m-32):m]...)
			tail = tail[max(0, len(tail)-32):]
		}
		if errors.Is(err, io.EOF) {
			if !bytes.Contains(tail, []byte("data: [DONE]")) {
				return first, n, errNoDone
			}
			return first, n, nil
		}
		if err != nil {
			return first, n, fmt.Errorf("read stream: %w", err)
		}
	}
}

// TTFB sends sequential short streaming requests (16 events) for dur or
// count requests, and records the time from sending each to its first
// body byte.
func (c Chat) TTFB(ctx context.Context, count int, dur time.Duration) (*stats.Latencies, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	lat := stats.NewLatencies(count)
	buf := make([]byte, 32<<10)
	for range count {
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		resp, err := c.post(ctx, 16, 16)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, err
		}
		first, _, err := readStream(resp, buf)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, err
		}
		lat.Add(first.Sub(t0))
	}
	if lat.Len() == 0 {
		return nil, errors.New("no request completed")
	}
	return lat, nil
}

// StreamResult is one long stream's throughput.
type StreamResult struct {
	Events  int
	Bytes   int64
	Elapsed time.Duration // first byte to end
}

// Stream asks for one stream of events events and reads it to the end,
// within dur.
func (c Chat) Stream(ctx context.Context, events int, dur time.Duration) (StreamResult, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	resp, err := c.post(ctx, events, 16)
	if err != nil {
		return StreamResult{}, err
	}
	first, n, err := readStream(resp, make([]byte, 64<<10))
	if err != nil {
		return StreamResult{}, err
	}
	return StreamResult{Events: events, Bytes: n, Elapsed: time.Since(first)}, nil
}
