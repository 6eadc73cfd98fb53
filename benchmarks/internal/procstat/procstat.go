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
	if len(f) < 13 {
		return Stat{}, fmt.Errorf("parse stat: %d fields after the name, want at least 13", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseUint(f[11], 10, 64)
	st, err3 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Stat{}, fmt.Errorf("parse stat: %w", err)
	}
	ticks := ut + st
	return Stat{PID: pid, PPID: ppid, CPU: time.Duration(ticks) * (time.Second / userHZ)}, nil
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
