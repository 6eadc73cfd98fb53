package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrkScript makes wrk send absolute-URI requests (a forward proxy's
// request form) when BENCH_TARGET is set, stops each thread after
// BENCH_MAX_PER_THREAD responses, and prints the summary as one JSON line.
const wrkScript = `-- written by benchmarks/internal/load; see wrk.go
local target = os.getenv("BENCH_TARGET") or ""
local host = os.getenv("BENCH_HOST") or ""
local max_per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "0")
if target ~= "" then
  wrk.path = target
  wrk.headers["Host"] = host
end
local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if max_per_thread > 0 and seen >= max_per_thread then
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// WrkResult is wrk's summary of one run.
type WrkResult struct {
	Requests      int64 `json:"requests"`
	DurationUS    int64 `json:"duration_us"`
	ConnectErrors int64 `json:"connect_errors"`
	ReadErrors    int64 `json:"read_errors"`
	WriteErrors   int64 `json:"write_errors"`
	StatusErrors  int64 `json:"status_errors"`
	Timeouts      int64 `json:"timeouts"`
	P50US         int64 `json:"p50_us"`
	P99US         int64 `json:"p99_us"`
	MaxUS         int64 `json:"max_us"`
}

// RPS is completed requests per second.
func (r WrkResult) RPS() float64 { return float64(r.Requests) / (float64(r.DurationUS) / 1e6) }

// Errors sums every kind of failure wrk counts, including non-2xx/3xx
// answers: a proxy that answers 403 fast must not look fast.
func (r WrkResult) Errors() int64 {
	return r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.StatusErrors + r.Timeouts
}

// Wrk describes one wrk run against a URL, optionally through a proxy.
type Wrk struct {
	Bin         string // path to wrk
	Dir         string // where the Lua script is written
	URL         string // what wrk connects to: the proxy, or the origin for DIRECT
	Target      string // absolute URI sent as the request target; "" = origin-form
	Threads     int
	Conns       int
	Duration    time.Duration
	MaxRequests int // in total; each thread stops after its share
}

// ParseWrk finds the script's JSON line in wrk's output.
func ParseWrk(out []byte) (WrkResult, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "BENCHJSON ")
		if !ok {
			continue
		}
		var r WrkResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return WrkResult{}, fmt.Errorf("parse wrk summary: %w", err)
		}
		return r, nil
	}
	return WrkResult{}, errors.New("wrk printed no summary line")
}

// Run runs wrk once and returns its summary.
func (w Wrk) Run(ctx context.Context) (WrkResult, error) {
	script := filepath.Join(w.Dir, "absolute-uri.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return WrkResult{}, fmt.Errorf("write wrk script: %w", err)
	}
	secs := max(1, int(w.Duration.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, w.Duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.Bin, "-t", strconv.Itoa(w.Threads), "-c", strconv.Itoa(w.Conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", "-s", script, w.URL)
	host := ""
	if w.Target != "" {
		if i := strings.Index(w.Target, "://"); i >= 0 {
			host, _, _ = strings.Cut(w.Target[i+3:], "/")
		}
	}
	cmd.Env = append(os.Environ(), "BENCH_TARGET="+w.Target, "BENCH_HOST="+host,
		"BENCH_MAX_PER_THREAD="+strconv.Itoa(max(1, w.MaxRequests/max(1, w.Threads))))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk: %w: %s", err, bytes.TrimSpace(out))
	}
	return ParseWrk(out)
}
