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
	if e.opt.statDir != "" && p != nil {
		return e.countCalls(p, system, step)
	}
	if e.opt.perfDir == "" || p == nil || system != sysEgressd && system != sysEgressdB {
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

// countedEvents are what -perf-stat counts: the system calls a server
// makes per request, and its context switches, which the CPU figures
// alone do not explain (a Go server's wake-ups against a C event loop's).
var countedEvents = []string{
	"context-switches", "task-clock",
	"syscalls:sys_enter_read", "syscalls:sys_enter_write", "syscalls:sys_enter_readv", "syscalls:sys_enter_writev",
	"syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvmsg", "syscalls:sys_enter_sendmsg",
	"syscalls:sys_enter_recvmmsg", "syscalls:sys_enter_sendmmsg", "syscalls:sys_enter_accept4", "syscalls:sys_enter_accept",
	"syscalls:sys_enter_connect", "syscalls:sys_enter_socket", "syscalls:sys_enter_close", "syscalls:sys_enter_shutdown",
	"syscalls:sys_enter_setsockopt", "syscalls:sys_enter_getsockopt", "syscalls:sys_enter_getsockname",
	"syscalls:sys_enter_getpeername", "syscalls:sys_enter_splice", "syscalls:sys_enter_pipe2",
	"syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_ctl",
	"syscalls:sys_enter_futex", "syscalls:sys_enter_nanosleep", "syscalls:sys_enter_fcntl",
}

// countCalls runs `perf stat` on one system for one step (-perf-stat);
// its counts land in DIR/system-step.txt when the step ends.
func (e *env) countCalls(p *proc, system, step string) func() {
	if err := os.MkdirAll(e.opt.statDir, 0o755); err != nil {
		slog.Warn("perf stat", "err", err)
		return func() {}
	}
	out := filepath.Join(e.opt.statDir, fmt.Sprintf("%s-%s.txt", system, step))
	args := []string{"stat", "-o", out}
	for _, ev := range countedEvents {
		args = append(args, "-e", ev)
	}
	cmd := exec.Command("perf", append(args, "-p", strconv.Itoa(p.pid()))...)
	if err := cmd.Start(); err != nil {
		slog.Warn("perf stat", "err", err)
		return func() {}
	}
	time.Sleep(200 * time.Millisecond)
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}
}
