package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkDecide/exact_hit-2         	  200000	        95.50 ns/op	       0 B/op	       0 allocs/op
BenchmarkDecide/uppercase_slow_path-2	  200000	       180.0 ns/op	      48 B/op	       1 allocs/op
BenchmarkDecide/miss_deep         	  200000	       150.0 ns/op	       0 B/op	       0 allocs/op
PASS
`
	got := parseBench([]byte(out))
	want := microResults{
		{Name: "BenchmarkDecide/exact_hit", NsOp: 95.5},
		{Name: "BenchmarkDecide/uppercase_slow_path", NsOp: 180, BytesOp: 48, AllocsOp: 1},
		{Name: "BenchmarkDecide/miss_deep", NsOp: 150},
	}
	if len(got) != len(want) {
		t.Fatalf("parseBench = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseBench[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	c := got.decideCheck()
	if !c.ok || c.missing || !strings.Contains(c.text, "miss_deep 150 ns/op") {
		t.Errorf("decideCheck = %+v, want met on miss_deep at 150 ns (uppercase left out)", c)
	}
	slow := append(got, microResult{Name: "BenchmarkDecide/wildcard_hit", NsOp: 250})
	if c := slow.decideCheck(); c.ok {
		t.Errorf("decideCheck with a 250 ns case = %+v, want not met", c)
	}
	if c := (microResults{}).decideCheck(); !c.missing {
		t.Errorf("decideCheck(nothing) = %+v, want missing", c)
	}
}

func TestFmtNum(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{math.NaN(), "—"}, {0, "0"}, {0.01234, "0.0123"}, {1.234, "1.23"}, {12.34, "12.3"},
		{1234, "1234"}, {12345, "12.3k"}, {1.5e6, "1.50M"},
	}
	for _, tt := range tests {
		if got := fmtNum(tt.in); got != tt.want {
			t.Errorf("fmtNum(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSummarizeAndGoals(t *testing.T) {
	gs := groupDefs([]string{sysDirect, sysEgressd, "squid", sysGoproxy, sysTunnel})
	col := newCollector()
	add := func(g int, sys string, s sample) { col.add(gs[g], sys, s) }
	for range 3 {
		add(0, sysDirect, sample{"http_rps": 30000})
		add(0, sysEgressd, sample{"http_rps": 9000, "http_cpu_us": 50, "http_p99_ms": 10})
		add(0, "squid", sample{"http_rps": 6000, "http_cpu_us": 90, "http_p99_ms": 12})
		add(0, sysGoproxy, sample{"http_rps": 9500, "http_cpu_us": 49})
	}
	add(0, sysEgressd, sample{}) // a failed fourth run counts as missing
	res := col.summarize(gs)
	m := res[0].Metrics[0]
	if m.ID != "http_rps" || m.Values[sysEgressd].N != 3 || m.Values[sysEgressd].Median != 9000 {
		t.Fatalf("http_rps egressd = %+v, want 3 runs with median 9000", m.Values[sysEgressd])
	}
	if got := float64(m.VsDirect); got != 0.3 {
		t.Errorf("egressd ÷ DIRECT = %v, want 0.3", got)
	}
	if m.BestPeer != "squid" || float64(m.VsBestPeer) != 1.5 {
		t.Errorf("best peer = %s at %v×, want squid at 1.5×", m.BestPeer, float64(m.VsBestPeer))
	}
	g := goals(res, nil)
	named := func(prefix string) goal {
		for _, x := range g {
			if strings.HasPrefix(x.Goal, prefix) {
				return x
			}
		}
		t.Fatalf("no goal starts with %q", prefix)
		return goal{}
	}
	if got := named("20: plain HTTP"); got.Status != goalMet {
		t.Errorf("HTTP goal = %+v, want met (1.5× squid's rate, 0.56× its CPU, lower p99)", got)
	}
	if got := named("7: policy + rate limits"); got.Status != goalMet {
		t.Errorf("CPU overhead goal = %+v, want met (50 vs 49 µs is +2%%)", got)
	}
	for _, p := range []string{"7: memory", "7: decision", "20: DNS"} {
		if got := named(p); got.Status != goalNotMeasured {
			t.Errorf("goal %q = %s, want not measured", p, got.Status)
		}
	}
}

func TestUpdateReadme(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	orig := "# B\n\nhand text\n\n" + readmeStart + "\nold\n" + readmeEnd + "\n\n## Decision micro-benchmarks\n\nkept\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateReadme(path, "NEW TABLE"); err != nil {
		t.Fatalf("updateReadme: %v", err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	for _, want := range []string{"hand text", "NEW TABLE", "## Decision micro-benchmarks\n\nkept"} {
		if !strings.Contains(got, want) {
			t.Errorf("README after update lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "old") {
		t.Errorf("README still has the old results:\n%s", got)
	}
	if err := os.WriteFile(path, []byte("no markers"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateReadme(path, "x"); err == nil {
		t.Error("updateReadme without markers succeeded, want an error")
	}
}

func TestEgressdPolicyShape(t *testing.T) {
	p := egressdPolicy("/tmp/x")
	if _, err := policy.LoadBytes([]byte(p), "bench.yaml"); err != nil {
		t.Fatalf("the benchmark policy does not load: %v", err)
	}
	if n := strings.Count(p, "\n  - host:") + strings.Count(p, "\n  - cidr:"); n != policyGrants+2 {
		t.Errorf("policy has %d grants, want %d", n, policyGrants+2)
	}
	for _, want := range []string{"networks:\n  allow: [127.0.0.0/8]", "file: /tmp/x/decisions.jsonl", `"*.tenant-`} {
		if !strings.Contains(p, want) {
			t.Errorf("policy lacks %q", want)
		}
	}
}

func TestCommand(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"-bin", "benchmarks/.bin"}, "benchmarks/run"},
		{[]string{"-bin", "x", "-reps", "5"}, "benchmarks/run -reps 5"},
		{[]string{"-bin=x", "-systems", "egressd"}, "benchmarks/run -systems egressd"},
	}
	for _, tt := range tests {
		if got := command(tt.in); got != tt.want {
			t.Errorf("command(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCompareSystem: -compare adds egressd-b beside egressd, whatever
// -systems picks, in the proxy and DNS tables alike.
func TestCompareSystem(t *testing.T) {
	tests := []struct {
		systems, compare string
		want             []string
	}{
		{"egressd,squid", "", []string{sysDirect, sysEgressd, "squid"}},
		{"egressd,squid", "/tmp/b", []string{sysDirect, sysEgressd, sysEgressdB, "squid"}},
		{"squid", "/tmp/b", []string{sysDirect, sysEgressdB, "squid"}},
	}
	for _, tt := range tests {
		var got []string
		for _, s := range selected(options{systems: tt.systems, compare: tt.compare}) {
			got = append(got, s.name)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("selected(systems %q, compare %q) = %v, want %v", tt.systems, tt.compare, got, tt.want)
		}
		dns := groupDefs(got)[2].Systems
		if has := slices.Contains(dns, sysEgressdB); has != (tt.compare != "") {
			t.Errorf("DNS systems %v with compare %q", dns, tt.compare)
		}
	}
}
