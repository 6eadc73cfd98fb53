package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// results is everything one run of the suite produced: latest.json.
type results struct {
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Reps     int               `json:"reps"`
	Command  string            `json:"command"`
	Machine  machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	Settings map[string]string `json:"settings"`
	Groups   []groupResult     `json:"groups"`
	Micro    microResults      `json:"micro"`
	Goals    []goal            `json:"goals"`
	Failures []string          `json:"failures"`
	Notes    map[string]string `json:"notes"`
	// DecisionLogBytes shows egressd's decision log was on and written.
	DecisionLogBytes   int64 `json:"decision_log_bytes"`
	DecisionLogDropped int64 `json:"decision_log_dropped"`
}

// fmtNum prints 3 significant digits, with k and M for large values.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 1e6:
		return sig(v/1e6) + "M"
	case a >= 1e4:
		return sig(v/1e3) + "k"
	default:
		return sig(v)
	}
}

func sig(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func cell(s stats.Summary) string {
	if !s.OK() {
		return "—"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func ratio(v stats.Num) string {
	if math.IsNaN(float64(v)) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", float64(v))
}

// markdownTables renders every group as a table: median (min–max) per
// system, then egressd's ratio to DIRECT and to the best peer.
func markdownTables(gs []groupResult) string {
	var b strings.Builder
	for _, g := range gs {
		fmt.Fprintf(&b, "#### %s\n\n| metric |", g.Name)
		for _, s := range g.Systems {
			if s == sysEgressd {
				s = "**egressd**"
			}
			fmt.Fprintf(&b, " %s |", s)
		}
		b.WriteString(" egressd ÷ DIRECT | egressd ÷ best peer |\n|---|")
		for range g.Systems {
			b.WriteString("---:|")
		}
		b.WriteString("---:|---:|\n")
		for _, m := range g.Metrics {
			dir := "↑"
			if !m.Higher {
				dir = "↓"
			}
			fmt.Fprintf(&b, "| %s (%s) %s |", m.Title, m.Unit, dir)
			for _, s := range g.Systems {
				fmt.Fprintf(&b, " %s |", cell(m.Values[s]))
			}
			peer := "—"
			if m.BestPeer != "" && !math.IsNaN(float64(m.VsBestPeer)) {
				peer = ratio(m.VsBestPeer) + " " + m.BestPeer
			}
			fmt.Fprintf(&b, " %s | %s |\n", ratio(m.VsDirect), peer)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func goalsTable(gs []goal) string {
	var b strings.Builder
	b.WriteString("| goal (issue) | measured | status |\n|---|---|---|\n")
	for _, g := range gs {
		status := g.Status
		switch status {
		case goalMet:
			status = "✅ met"
		case goalNotMet:
			status = "❌ not met"
		default:
			status = "⚪ " + status
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.Goal, g.Measured, status)
	}
	return b.String()
}

// markdown is latest.md: the machine, the tables, the goals, failures.
func (r *results) markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "`%s`, run %s: %d repetitions per system (median, min–max), %.0f s in all.\n\n",
		r.Command, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Reps, r.Seconds)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), kernel %s, %s RAM, %s; 1-minute load %.2f when measuring started "+
		"(%.2f at the end, the suite's own load included); other processes used %.0f%% of the CPU capacity while it measured.\n\n",
		m.NProc, m.CPU, m.Kernel, m.MemTotal, m.Go, m.LoadStart, m.LoadEnd, 100*m.OtherCPU)
	b.WriteString("Versions: ")
	keys := make([]string, 0, len(r.Versions))
	for k := range r.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s `%s`", k, r.Versions[k])
	}
	b.WriteString(".\n\n")
	fmt.Fprintf(&b, "egressd's decision log: %d MiB in the files still kept at the end (it rotates at 50 MiB), "+
		"%d entries reported dropped.\n\n", r.DecisionLogBytes>>20, r.DecisionLogDropped)
	b.WriteString(markdownTables(r.Groups))
	b.WriteString("#### Goals\n\n")
	b.WriteString(goalsTable(r.Goals))
	if len(r.Notes) > 0 {
		b.WriteString("\n#### Notes\n\n")
		names := make([]string, 0, len(r.Notes))
		for n := range r.Notes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "- %s: %s\n", n, r.Notes[n])
		}
	}
	if len(r.Failures) > 0 {
		b.WriteString("\n#### Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
	}
	return b.String()
}

// write saves latest.json and latest.md into dir.
func (r *results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.markdown()), 0o644)
}

// Markers around the generated part of benchmarks/README.md; everything
// outside them is written by hand and left alone.
const (
	readmeStart = "<!-- results:start (generated by benchmarks/run; edits inside are overwritten) -->"
	readmeEnd   = "<!-- results:end -->"
)

// updateReadme replaces the text between the markers with md. A README
// without the markers is left untouched and reported.
func updateReadme(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(b, []byte(readmeStart)), bytes.Index(b, []byte(readmeEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q markers; results not copied into it", path, readmeStart, readmeEnd)
	}
	var out bytes.Buffer
	out.Write(b[:i+len(readmeStart)])
	out.WriteString("\n\n" + md + "\n")
	out.Write(b[j:])
	return os.WriteFile(path, out.Bytes(), 0o644)
}
