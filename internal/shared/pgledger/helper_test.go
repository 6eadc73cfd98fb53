package pgledger_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// The test binary re-executes itself as an egressd-like process that runs
// a meter on the shared store: helperEnv names what it does.
const (
	helperEnv = "EGRESSD_PGLEDGER_HELPER"
	dsnEnv    = "EGRESSD_TEST_LEDGER_DSN"
)

// helperResult is what a "race" helper prints when done.
type helperResult struct {
	OK, Budget, Other int
	Errors            []string
}

func runHelper(mode string) int {
	if mode == "serve" {
		return serveHelper()
	}
	capUSD, _ := strconv.ParseFloat(os.Getenv("HELPER_CAP"), 64)
	lease, _ := time.ParseDuration(os.Getenv("HELPER_LEASE"))
	m, err := meter.Open(pgBudget(os.Getenv("HELPER_BUDGET"), capUSD, "", 0),
		meter.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), Lease: lease, StoreTimeout: 20 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	defer m.Close()
	in := bufio.NewReader(os.Stdin)
	switch mode {
	case "race":
		calls, _ := strconv.Atoi(os.Getenv("HELPER_CALLS"))
		fmt.Println("ready")
		if _, err := in.ReadString('\n'); err != nil {
			return 2
		}
		res := race(m, calls, 0.01, 0.007)
		_ = json.NewEncoder(os.Stdout).Encode(res)
	case "hold":
		if _, err := m.Reserve("held-model", 0.05); err != nil {
			fmt.Fprintln(os.Stderr, "helper reserve:", err)
			return 2
		}
		fmt.Println("reserved")
		_, _ = io.Copy(io.Discard, in) // until killed
	}
	return 0
}

// race runs calls concurrent reserve+settle calls on m and tallies them.
func race(m *meter.Meter, calls int, reserveUSD, costUSD float64) helperResult {
	var mu sync.Mutex
	var res helperResult
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range calls {
		wg.Go(func() {
			<-start
			r, err := m.Reserve("gpt-4o-mini", reserveUSD)
			if err == nil {
				_, err = r.Settle(costUSD, meter.Usage{InputTokens: 10, OutputTokens: 5}, false)
				if err != nil {
					err = fmt.Errorf("settle: %w", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				res.OK++
			case errors.Is(err, meter.ErrBudgetExceeded):
				res.Budget++
			default:
				res.Other++
				if len(res.Errors) < 5 {
					res.Errors = append(res.Errors, err.Error())
				}
			}
		})
	}
	close(start)
	wg.Wait()
	return res
}

// pgBudget is a budget section on the shared store.
func pgBudget(name string, capUSD float64, shared string, sharedCap float64) policy.BudgetConfig {
	return policy.BudgetConfig{
		Store: policy.StorePostgres, DSNEnv: dsnEnv, Name: name, CapUSD: capUSD, Period: "month", WarnAt: 0.8,
		Shared: policy.SharedBudget{Name: shared, CapUSD: sharedCap},
		Prices: map[string]policy.Price{"gpt-4o-mini": {Input: 0.15, Output: 0.6}},
	}
}

// helperProc is one re-executed helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHelper starts the test binary as a helper in mode with the shared
// store at dsn; it is killed (by its PID) at the end of t.
func startHelper(t *testing.T, mode, dsn string, env ...string) *helperProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, dsnEnv+"="+dsn)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = &logWriter{t: t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &helperProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
}

// expect reads the helper's next line and fails unless it is want.
func (h *helperProc) expect(t *testing.T, want string) {
	t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil || line != want+"\n" {
		t.Fatalf("helper said %q, %v; want %q", line, err, want)
	}
}

// logWriter passes a helper's stderr to the test log.
type logWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Logf("helper: %s", p)
	return len(p), nil
}
