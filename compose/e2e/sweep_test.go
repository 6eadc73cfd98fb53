//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/hostwall"
)

// staleAfter is how old a leftover must be before the sweep removes it:
// longer than any run, so a run in progress is never touched.
const staleAfter = 40 * time.Minute

const projectPrefix = "egde2e"

// sweepStale removes what an earlier run left behind when it was killed
// before its cleanups ran (a test-binary timeout skips t.Cleanup): its
// containers, networks, volumes, images and host-wall rules. Only objects
// of this test (by label or name prefix) and older than staleAfter.
func sweepStale(t *testing.T, ctx context.Context) {
	t.Helper()
	old := func(created string) bool {
		ts, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(created))
		return err == nil && time.Since(ts) > staleAfter
	}
	for _, kind := range []struct{ list, inspect []string }{
		{[]string{"ps", "-aq", "--filter", "label=egressd-e2e"}, []string{"inspect", "--format", "{{.Id}} {{.Created}}"}},
		{[]string{"network", "ls", "-q", "--filter", "label=com.docker.compose.project"}, []string{"network", "inspect", "--format", `{{.Id}} {{.Created.Format "2006-01-02T15:04:05.999999999Z07:00"}} {{index .Labels "com.docker.compose.project"}}`}},
		{[]string{"volume", "ls", "-q", "--filter", "label=com.docker.compose.project"}, []string{"volume", "inspect", "--format", `{{.Name}} {{.CreatedAt}} {{index .Labels "com.docker.compose.project"}}`}},
		{[]string{"images", "-q", "--filter", "label=egressd-e2e"}, []string{"image", "inspect", "--format", "{{.Id}} {{.Created}}"}},
	} {
		r, err := runCmd(ctx, nil, "docker", kind.list...)
		ids := strings.Fields(r.out)
		if err != nil || len(ids) == 0 {
			continue
		}
		r, err = runCmd(ctx, nil, "docker", append(kind.inspect, uniq(ids)...)...)
		if err != nil {
			t.Logf("sweep: %v", err)
			continue
		}
		for line := range strings.Lines(r.out) {
			f := strings.Fields(line)
			if len(f) < 2 || !old(f[1]) || (len(f) == 3 && !strings.HasPrefix(f[2], projectPrefix)) || (len(f) == 2 && kind.list[0] == "network") {
				continue
			}
			rm := map[string][]string{"ps": {"rm", "-f"}, "network": {"network", "rm"}, "volume": {"volume", "rm", "-f"}, "images": {"rmi", "-f"}}[kind.list[0]]
			if _, err := runCmd(ctx, nil, "docker", append(rm, f[0])...); err != nil {
				t.Logf("sweep: %v", err)
			} else {
				t.Logf("sweep: removed stale %s %s", kind.list[0], f[0])
			}
		}
	}
	sweepHostwall(t, ctx)
}

var hostwallRule = regexp.MustCompile(`-i (` + projectPrefix + `[0-9a-f]+) .*` + hostwall.Tag)

// sweepHostwall removes host-wall rules for test bridges that no longer
// exist. Such a rule is inert (it names an absent interface) but should not
// accumulate.
func sweepHostwall(t *testing.T, ctx context.Context) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		r, err := runCmd(ctx, nil, tool, "-w", "-S", "INPUT")
		if err != nil {
			t.Logf("sweep: %v", err)
			continue
		}
		for _, m := range hostwallRule.FindAllStringSubmatch(r.out, -1) {
			if _, err := net.InterfaceByName(m[1]); err == nil {
				continue // a bridge that exists belongs to a run in progress
			}
			if err := hostwall.Remove(ctx, m[1]); err != nil {
				t.Logf("sweep: %v", err)
			} else {
				t.Logf("sweep: removed stale host-wall rule for %s", m[1])
			}
		}
	}
}

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// probeReport is `egressd probe --json`.
type probeReport struct {
	Results []probeResult `json:"results"`
}

type probeResult struct {
	Check  string `json:"check"`
	Target string `json:"target"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

func (p probeReport) find(check, target string) probeResult {
	for _, r := range p.Results {
		if r.Check == check && r.Target == target {
			return r
		}
	}
	return probeResult{}
}

func (p probeReport) count(status string) int {
	n := 0
	for _, r := range p.Results {
		if r.Status == status {
			n++
		}
	}
	return n
}

func (p probeReport) String() string {
	var b strings.Builder
	for _, r := range p.Results {
		fmt.Fprintf(&b, "  %-4s %-11s %-22s %s\n", r.Status, r.Check, r.Target, r.Detail)
	}
	return b.String()
}

// runProbe runs `egressd probe --json` in the compose probe service with the
// test's targets and returns its report and exit code.
func (s *stack) runProbe(t *testing.T, ctx context.Context, hostPort int) (probeReport, int) {
	t.Helper()
	eip := s.egressdIP.String()
	args := []string{"run", "--rm", "-T", "probe", "probe",
		"--proxy=http://" + eip + ":3128", "--dns=" + eip + ":53", "--dns=127.0.0.11:53",
		"--admin=" + eip + ":9090", "--bridge=" + s.bridge, "--lateral=auto",
		"--host=gateway", fmt.Sprintf("--ports=%d", hostPort),
		"--direct=" + s.fakeIP.String() + ":443", "--direct=" + s.fakeIP.String() + ":53",
		"--json"}
	start := time.Now()
	r, err := s.compose(ctx, args...)
	if err != nil && r.code <= 0 {
		t.Fatalf("egressd probe did not run: %v", err)
	}
	var rep probeReport
	if jerr := json.Unmarshal([]byte(r.out), &rep); jerr != nil || len(rep.Results) == 0 {
		t.Fatalf("egressd probe --json output (exit %d): %v\nstdout: %s\nstderr: %s", r.code, jerr, tail(r.out), tail(r.err))
	}
	t.Logf("egressd probe: exit %d in %s\n%s", r.code, time.Since(start).Round(100*time.Millisecond), rep)
	return rep, r.code
}
