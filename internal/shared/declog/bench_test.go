package declog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user + system) this process has used so far.
// Benchmarks report it per entry because wall time on a shared 2-core
// machine says more about the neighbours than about the writer.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoggerThroughput pushes entries through a Logger whose stdout
// and file are real files (so every write is a write(2), as in the
// daemon), in bursts the queue can hold, and waits for each burst to be
// written: ns/op and cpu-ns/op are the whole cost of one logged entry
// (Record, queue, wake-up, encoding, writes). burst=1 is a lightly loaded
// daemon (one wake-up per entry), burst=256 a busy one.
func BenchmarkLoggerThroughput(b *testing.B) {
	for _, burst := range []int{1, 16, 256} {
		b.Run(benchName("burst", burst), func(b *testing.B) {
			dir := b.TempDir()
			f, err := os.Create(filepath.Join(dir, "stdout"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			stdout := &lineCounter{w: f, ch: make(chan struct{}, 1)}
			l, err := New(Options{File: filepath.Join(dir, "decisions.log"), Stdout: stdout,
				Stderr: f, ThrottleWindow: -1, MaxBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			es := []Entry{allowed("10.0.0.2", "pypi.org"), denial("10.0.0.2", "evil.example")}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			n := 0
			for b.Loop() {
				l.Record(es[n&1])
				n++
				if n%burst == 0 {
					stdout.wait(int64(n))
				}
			}
			stdout.wait(int64(n))
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(n), "cpu-ns/op")
			b.StopTimer()
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			if s := l.Stats(); s.Dropped != 0 {
				b.Fatalf("dropped %d entries; the benchmark must measure writing, not dropping", s.Dropped)
			}
		})
	}
}

// lineCounter passes writes on to w and counts the lines, so a benchmark
// can block (not spin, which would burn the CPU it measures) until the
// writer has written n lines.
type lineCounter struct {
	w      io.Writer
	lines  atomic.Int64
	target atomic.Int64
	ch     chan struct{}
}

func (c *lineCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if c.lines.Add(int64(bytes.Count(p[:n], []byte("\n")))) >= c.target.Load() {
		select {
		case c.ch <- struct{}{}:
		default:
		}
	}
	return n, err
}

func (c *lineCounter) wait(n int64) {
	c.target.Store(n)
	for c.lines.Load() < n {
		<-c.ch
	}
}

func benchName(prefix string, n int) string {
	return prefix + "=" + strconv.Itoa(n)
}
