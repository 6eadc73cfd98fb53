package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/procstat"
)

// proc is one process the suite started. It is stopped by its PID (and
// the PIDs of its descendants, found in /proc), never by name, so a
// system squid or dnsmasq on the machine is never touched.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's result, set before done closes
}

// running tracks every started process so an interrupt can stop them.
var running = struct {
	sync.Mutex
	procs map[*proc]struct{}
}{procs: map[*proc]struct{}{}}

// startProc starts bin with args, its output going to logPath.
func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	return startProcOut(name, logPath, false, env, bin, args...)
}

// startProcOut is startProc that can discard standard output (egressd's
// copy of its decision log, which a deployment hands to Docker's log
// driver: the encoding and the write are still paid, the file is not
// kept twice).
func startProcOut(name, logPath string, discardStdout bool, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if discardStdout {
		cmd.Stdout = nil // os/exec connects nil to /dev/null
	}
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	running.Lock()
	running.procs[p] = struct{}{}
	running.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail is the end of the process's output, for error messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// usage reads the CPU time and RSS of the process and its descendants.
func (p *proc) usage() (procstat.Usage, error) {
	if p.exited() {
		return procstat.Usage{}, fmt.Errorf("%s exited: %v: %s", p.name, p.err, p.logTail())
	}
	return procstat.Tree(p.pid())
}

// stop sends SIGTERM, then SIGKILL after grace, to the process and then
// to any of its descendants still alive.
func (p *proc) stop(grace time.Duration) {
	kids := procstat.Descendants(p.pid())
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, k := range kids {
		if syscall.Kill(k, syscall.SIGTERM) == nil {
			deadline := time.Now().Add(grace)
			for time.Now().Before(deadline) && syscall.Kill(k, 0) == nil {
				time.Sleep(20 * time.Millisecond) // polling a PID we do not own a handle to
			}
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	running.Lock()
	delete(running.procs, p)
	running.Unlock()
}

// stopAll stops every process still running (on interrupt or exit).
func stopAll() {
	running.Lock()
	ps := make([]*proc, 0, len(running.procs))
	for p := range running.procs {
		ps = append(ps, p)
	}
	running.Unlock()
	for _, p := range ps {
		p.stop(3 * time.Second)
	}
}

// waitReady polls until check succeeds, the process exits, or timeout.
func (p *proc) waitReady(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited during start: %v: %s", p.name, p.err, p.logTail())
		}
		if err = check(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness condition with a deadline
	}
	return fmt.Errorf("%s not ready after %v: %w: %s", p.name, timeout, err, p.logTail())
}

// tcpUp is a readiness check: something accepts on addr.
func tcpUp(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// portFree fails when something already listens on addr, so the suite
// never measures, or stops, a process it did not start.
func portFree(ctx context.Context, network, addr string) error {
	var lc net.ListenConfig
	if network == "udp" {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fmt.Errorf("%s/udp is taken (%w); stop what uses it or change the suite's addresses", addr, err)
		}
		return pc.Close()
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s/tcp is taken (%w); stop what uses it or change the suite's addresses", addr, err)
	}
	return l.Close()
}

var errSkipped = errors.New("skipped")
