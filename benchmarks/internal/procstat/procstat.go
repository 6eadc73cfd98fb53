// Package procstat reads what a process tree costs from /proc: CPU time
// (utime+stime from /proc/PID/stat) and resident memory (VmRSS from
// /proc/PID/status). The benchmark charges a system under test for every
// process it runs (squid's helpers, for instance), so the functions here
// sum over a process and all its descendants.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime. Linux exports them in USER_HZ,
// which is 100 on every architecture Go supports; reading sysconf would
// need cgo.
const userHZ = 100

// ErrNoProcess reports that the PID is not (or no longer) running.
var ErrNoProcess = errors.New("no such process")

// Stat is what one /proc/PID/stat line says about CPU and parentage.
type Stat struct {
	PID, PPID int
	// CPU is utime+stime: time the process (all its threads, including
	// ones that have exited) spent on a CPU.
	CPU time.Duration
	// ChildCPU is cutime+cstime: the CPU time of its children that
	// exited and were waited for.
	ChildCPU time.Duration
}

// ParseStat parses the content of /proc/PID/stat. The command name is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return Stat{}, fmt.Errorf("parse stat: no command name in %q", trim(b))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return Stat{}, fmt.Errorf("parse stat: pid: %w", err)
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15), so index 0 is
	// field 3.
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 15 {
		return Stat{}, fmt.Errorf("parse stat: %d fields after the name, want at least 15", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseUint(f[11], 10, 64)
	st, err3 := strconv.ParseUint(f[12], 10, 64)
	cut, err4 := strconv.ParseInt(f[13], 10, 64)
	cst, err5 := strconv.ParseInt(f[14], 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return Stat{}, fmt.Errorf("parse stat: %w", err)
	}
	return Stat{PID: pid, PPID: ppid, CPU: ticks(int64(ut + st)), ChildCPU: ticks(cut + cst)}, nil
}

func ticks(n int64) time.Duration { return time.Duration(n) * (time.Second / userHZ) }

// ParseMachineBusy returns the time processes kept the CPUs busy, summed
// over all CPUs, from the content of /proc/stat: user, nice, system and
// steal (guest time is already inside user). Interrupt and softirq time
// is left out: the kernel does not charge it to any process (loopback
// traffic is mostly softirq), so it could not be told apart.
func ParseMachineBusy(b []byte) (time.Duration, error) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: first line %q, want the cpu totals", trim(line))
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 8} { // user nice system (idle iowait irq softirq) steal
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		busy += v
	}
	return ticks(busy), nil
}

// MachineBusy reads ParseMachineBusy from /proc/stat.
func MachineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	return ParseMachineBusy(b)
}

// Own is the CPU time this process has cost the machine so far: its own,
// its waited-for children's, and that of descendants still running.
func Own() (time.Duration, error) {
	self, err := readStat(os.Getpid())
	if err != nil {
		return 0, err
	}
	total := self.CPU + self.ChildCPU
	for _, p := range descendants(os.Getpid()) {
		if s, err := readStat(p); err == nil {
			total += s.CPU + s.ChildCPU
		}
	}
	return total, nil
}

// ParseRSS returns VmRSS from the content of /proc/PID/status, in bytes.
// A kernel thread or zombie has no VmRSS line and reports 0.
func ParseRSS(b []byte) (int64, error) {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse status: VmRSS line %q, want \"<n> kB\"", trim(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse status: VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, nil
}

// Usage is the CPU time and resident memory of a process tree at one
// moment.
type Usage struct {
	CPU   time.Duration
	RSS   int64 // bytes
	Procs int   // processes counted
}

// Tree reads the usage of pid and all its descendants. It fails with
// ErrNoProcess when pid itself is gone; descendants that exit while being
// read are skipped.
func Tree(pid int) (Usage, error) {
	root, err := readStat(pid)
	if err != nil {
		return Usage{}, err
	}
	pids := append([]int{pid}, descendants(pid)...)
	var u Usage
	for _, p := range pids {
		s := root
		if p != pid {
			if s, err = readStat(p); err != nil {
				continue
			}
		}
		rss, err := readRSS(p)
		if err != nil && p == pid {
			return Usage{}, err
		}
		u.CPU += s.CPU
		u.RSS += rss
		u.Procs++
	}
	return u, nil
}

// Descendants lists the PIDs whose chain of parents leads to pid.
func Descendants(pid int) []int { return descendants(pid) }

func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readStat(p)
		if err != nil {
			continue
		}
		children[s.PPID] = append(children[s.PPID], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func readStat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Stat{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return Stat{}, fmt.Errorf("read stat: %w", err)
	}
	return ParseStat(b)
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("read status: %w", err)
	}
	return ParseRSS(b)
}

func trim(b []byte) string {
	if len(b) > 80 {
		b = b[:80]
	}
	return string(b)
}
