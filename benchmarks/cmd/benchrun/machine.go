package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
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

// waitQuiet waits up to max for the 1-minute load to fall below limit,
// so other work on the machine does not skew the numbers; it measures
// anyway after max, and the report shows the load.
func waitQuiet(limit float64, max time.Duration, say func(string, ...any)) {
	deadline := time.Now().Add(max)
	for l := load1(); l >= limit && time.Now().Before(deadline); l = load1() {
		say("waiting for a quiet machine", "load1", l, "below", limit, "gives_up_in", time.Until(deadline).Round(time.Second))
		time.Sleep(10 * time.Second) // load average moves slowly; poll with a deadline
	}
}

// versions asks each tool for its version, for the report.
func versions(e *env) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	probes := map[string][]string{
		"squid":       {"-v"},
		"tinyproxy":   {"-v"},
		"dnsmasq":     {"--version"},
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
