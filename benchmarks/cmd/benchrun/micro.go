package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// microResult is one line of `go test -bench -benchmem` output.
type microResult struct {
	Name     string  `json:"name"`
	NsOp     float64 `json:"ns_op"`
	BytesOp  float64 `json:"bytes_op"`
	AllocsOp float64 `json:"allocs_op"`
}

type microResults []microResult

// parseBench reads benchmark lines such as
// "BenchmarkDecide/exact_hit-2  1000000  95.2 ns/op  0 B/op  0 allocs/op".
func parseBench(out []byte) microResults {
	var res microResults
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		r := microResult{Name: f[0]}
		if i := strings.LastIndexByte(r.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(r.Name[i+1:]); err == nil {
				r.Name = r.Name[:i] // drop the GOMAXPROCS suffix
			}
		}
		ok := false
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsOp, ok = v, true
			case "B/op":
				r.BytesOp = v
			case "allocs/op":
				r.AllocsOp = v
			}
		}
		if ok {
			res = append(res, r)
		}
	}
	return res
}

// runMicro runs the decision micro-benchmarks of package benchmarks
// (written with the policy package) for a fixed number of iterations.
func runMicro(ctx context.Context, repo string) (microResults, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkDecide$",
		"-benchmem", "-benchtime", "200000x", "-count", "3", ".")
	// The suite is a module of its own, rooted in benchmarks/.
	cmd.Dir = filepath.Join(repo, "benchmarks")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, out, fmt.Errorf("go test -bench: %w", err)
	}
	return parseBench(out), out, nil
}

// decideCheck judges "under 200 ns and 0 allocations per decision at
// 10,000 rules" on the slowest canonical case (BenchmarkDecide runs at
// 10,000 rules; its uppercase_slow_path case is documented as allocating
// and is left out), taking each case's median of the repeated counts.
func (m microResults) decideCheck() check {
	byName := map[string][]microResult{}
	for _, r := range m {
		if strings.HasPrefix(r.Name, "BenchmarkDecide/") && !strings.Contains(r.Name, "uppercase") {
			byName[r.Name] = append(byName[r.Name], r)
		}
	}
	if len(byName) == 0 {
		return check{missing: true, text: "BenchmarkDecide did not run"}
	}
	worst, worstName, allocs := 0.0, "", 0.0
	for name, rs := range byName {
		ns := make([]float64, len(rs))
		for i, r := range rs {
			ns[i] = r.NsOp
			allocs = max(allocs, r.AllocsOp)
		}
		med := stats.Summarize(ns).Median
		if med > worst {
			worst, worstName = med, name
		}
	}
	return check{ok: worst < 200 && allocs == 0,
		text: fmt.Sprintf("slowest case %s %.0f ns/op, max %.0f allocs/op", strings.TrimPrefix(worstName, "BenchmarkDecide/"), worst, allocs)}
}
