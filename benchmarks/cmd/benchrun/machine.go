package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/procstat"
)

// machine is what the numbers were measured on.
type machine struct {
	NProc    int    `json:"nproc"`
	CPU      string `json:"cpu"`
	Kernel   string `json:"kernel"`
	MemTotal string `json:"mem_total"`
	Go       string `json:"go"`
	// Load is /proc/loadavg's 1-minute average when measuring started
	// and ended: other work on the machine shows up here.
	LoadStart float64 `json:"load1_start"`
	LoadEnd   float64 `json:"load1_end"`
	// OtherCPU is the share of the machine's CPU capacity that processes
	// other than the suite (and what it started) used while it measured:
	// the load average counts the suite itself, this does not.
	OtherCPU float64 `json:"other_cpu_share"`
}

// otherCPU measures what the rest of the machine uses during a span.
type otherCPU struct {
	busy, own time.Duration
	start     time.Time
}

func startOtherCPU() otherCPU {
	busy, _ := procstat.MachineBusy()
	own, _ := procstat.Own()
	return otherCPU{busy: busy, own: own, start: time.Now()}
}

// share is the others' CPU time over the span's capacity (wall × CPUs).
func (o otherCPU) share() float64 {
	busy, err1 := procstat.MachineBusy()
	own, err2 := procstat.Own()
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	other := (busy - o.busy) - (own - o.own)
	return max(0, float64(other)/(float64(time.Since(o.start))*float64(runtime.NumCPU())))
}

func readMachine() machine {
	m := machine{NProc: runtime.NumCPU(), Go: runtime.Version(), LoadStart: load1()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		if n, err := strconv.Atoi(strings.TrimSuffix(kb, " kB")); err == nil {
			m.MemTotal = strconv.Itoa(n/1024/1024) + " GiB"
		}
	}
	return m
}

func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// load1 is the 1-minute load average, -1 when unreadable.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// waitQuiet waits up to max for a quiet machine, so other work does not
// skew the numbers: the 1-minute load below limit, or other processes
// using under 5% of the CPUs over a 10-second look (the load average
// lags, and right after a previous run it counts the suite itself). It
// measures anyway after max; the report shows the load and the others'
// share while measuring.
func waitQuiet(limit float64, max time.Duration, say func(string, ...any)) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if l := load1(); l < limit {
			return
		}
		o := startOtherCPU()
		time.Sleep(10 * time.Second) // the window the others' share is measured over
		share := o.share()
		if share < 0.05 {
			return
		}
		say("waiting for a quiet machine", "load1", load1(), "other_cpu", fmt.Sprintf("%.0f%%", 100*share),
			"gives_up_in", time.Until(deadline).Round(time.Second))
	}
}

// versions asks each tool for its version, for the report.
func versions(e *env) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	probes := map[string][]string{
		"squid":       {"-v"},
		"tinyproxy":   {"-v"},
		"dnsmasq":     {"--version"},
		"unbound":     {"-V"},
		"wrk":         {"-v"},
		"smokescreen": {"--version"},
		"egressd":     {"version"},
	}
	for name, args := range probes {
		out, _ := exec.Command(e.bin(name), args...).CombinedOutput()
		v[name] = versionLine(out)
	}
	return v
}
