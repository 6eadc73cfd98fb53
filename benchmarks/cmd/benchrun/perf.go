package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// profile attaches `perf record -g` to egressd for one step when -perf is
// set, and writes perf's report next to the data when the step ends.
// Profiling costs CPU, so a -perf run is for finding hot paths, not for
// the published numbers. It returns the function that ends the profile.
func (e *env) profile(p *proc, system, step string) func() {
	if e.opt.perfDir == "" || p == nil || system != sysEgressd {
		return func() {}
	}
	if err := os.MkdirAll(e.opt.perfDir, 0o755); err != nil {
		slog.Warn("perf", "err", err)
		return func() {}
	}
	data := filepath.Join(e.opt.perfDir, fmt.Sprintf("%s-%s.data", system, step))
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(p.pid()), "-o", data)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		slog.Warn("perf record", "err", err)
		return func() {}
	}
	time.Sleep(200 * time.Millisecond) // perf attaches asynchronously; a short head start
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children",
			"--sort", "symbol", "--percent-limit", "1").CombinedOutput()
		if err != nil {
			slog.Warn("perf report", "err", err)
		}
		_ = os.WriteFile(data+".txt", out, 0o644)
	}
}
