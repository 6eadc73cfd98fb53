package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/declog"
)

// Errors the CLI branches on.
var (
	ErrUnauthorized = errors.New("admin listener refused the token (set the admin token)")
	ErrStreamEnded  = errors.New("admin event stream ended (egressd stopped?)")
)

// Client limits: a status is small, an event line is a few hundred bytes.
const (
	maxStatusBytes = 4 << 20
	maxEventLine   = 1 << 20
	statusTimeout  = 10 * time.Second
)

// client talks to the admin listener directly: never through HTTP_PROXY,
// which inside a sandbox may point at egressd's own proxy.
var client = &http.Client{Transport: &http.Transport{
	Proxy:                 nil,
	ResponseHeaderTimeout: statusTimeout,
	MaxIdleConns:          2,
	IdleConnTimeout:       30 * time.Second,
}}

// endpoint joins baseURL (scheme optional: "127.0.0.1:9090" means http)
// and path.
func endpoint(baseURL, path string) (string, error) {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", fmt.Errorf("admin url %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("admin url %q: want http://host:port", baseURL)
	}
	return strings.TrimSuffix(u.String(), "/") + path, nil
}

func get(ctx context.Context, baseURL, path, token string) (*http.Response, error) {
	u, err := endpoint(baseURL, path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("admin request: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, ErrUnauthorized
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return nil, fmt.Errorf("admin %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
}

// FetchStatus GETs /status from the admin listener at baseURL.
func FetchStatus(ctx context.Context, baseURL, token string) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	resp, err := get(ctx, baseURL, "/status", token)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBytes)).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("admin /status: decode: %w", err)
	}
	return st, nil
}

// Stream follows /events at baseURL and calls fn for each entry until ctx
// ends (it returns nil), fn fails (its error), or the server ends the
// stream (ErrStreamEnded). It has the signature declog.TailOptions.Stream
// wants once baseURL and token are bound.
func Stream(ctx context.Context, baseURL, token string, fn func(declog.Entry) error) error {
	return stream(ctx, baseURL, "/events", token, fn)
}

// StreamDenied is Stream filtered on the server (/events?denied=1): only
// denials, would-denies and their summaries cross the wire.
func StreamDenied(ctx context.Context, baseURL, token string, fn func(declog.Entry) error) error {
	return stream(ctx, baseURL, "/events?denied=1", token, fn)
}

func stream(ctx context.Context, baseURL, path, token string, fn func(declog.Entry) error) error {
	resp, err := get(ctx, baseURL, path, token)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("admin /events: content type %q, want text/event-stream", ct)
	}
	err = readEvents(bufio.NewReaderSize(resp.Body, 64<<10), fn)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrStreamEnded
	}
	return err
}

// readEvents parses the SSE stream: "data:" lines accumulate until a blank
// line dispatches them; comments and other fields are ignored. Data that is
// not a decision entry is skipped.
func readEvents(r *bufio.Reader, fn func(declog.Entry) error) error {
	var data []byte
	for {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				e, uerr := declog.Unmarshal(data)
				data = data[:0]
				if uerr == nil {
					if err := fn(e); err != nil {
						return err
					}
				}
			}
		case line[0] == ':':
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			if string(field) == "data" {
				if len(data) > 0 {
					data = append(data, '\n')
				}
				data = append(data, bytes.TrimPrefix(value, []byte(" "))...)
				if len(data) > maxEventLine {
					return fmt.Errorf("admin /events: event over %d bytes", maxEventLine)
				}
			}
		}
	}
}

// readLine returns one line without its "\n" (or "\r\n"), refusing lines
// longer than maxEventLine.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxEventLine {
			return nil, fmt.Errorf("admin /events: line over %d bytes", maxEventLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")), nil
	}
}

// GetJSON GETs path from the admin listener and decodes its JSON answer
// into v.
func GetJSON(ctx context.Context, baseURL, path, token string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	resp, err := get(ctx, baseURL, path, token)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBytes)).Decode(v); err != nil {
		return fmt.Errorf("admin %s: decode: %w", path, err)
	}
	return nil
}

// PostJSON POSTs body as JSON to path and decodes the answer into v. An
// answer other than 200 is an error carrying the server's "error" text.
func PostJSON(ctx context.Context, baseURL, path, token string, body, v any) error {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	u, err := endpoint(baseURL, path)
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("admin %s: encode: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("admin request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return ErrUnauthorized
	case resp.StatusCode != http.StatusOK:
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin %s: %s", path, e.Error)
		}
		return fmt.Errorf("admin %s: %s: %s", path, resp.Status, strings.TrimSpace(string(data)))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("admin %s: decode: %w", path, err)
	}
	return nil
}
