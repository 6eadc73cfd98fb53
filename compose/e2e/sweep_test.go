//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cli/hostwall"
	"github.com/egressd/egressd/internal/cli/probe"
)

// portList joins ports with commas, as --ports takes them.
func portList(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

// staleAfter is how old a leftover must be before the sweep removes it:
// longer than any run, so a run in progress is never touched.
const staleAfter = 40 * time.Minute

const projectPrefix = "egde2e"

// sweepStale removes what an earlier run left behind when it was killed
// before its cleanups ran (a test-binary timeout skips t.Cleanup).
func sweepStale(t *testing.T, ctx context.Context) {
	t.Helper()
	sweep(t, ctx, projectPrefix, staleAfter)
}

// sweepKinds lists, per kind of Docker object, how to find this test's
// objects and how to print "ID CREATED PROJECT" for each.
var sweepKinds = []struct {
	name          string
	list, inspect []string
	rm            []string
}{
	{"container", []string{"ps", "-aq", "--filter", "label=egressd-e2e"},
		[]string{"inspect", "--format", `{{.Id}} {{.Created}} {{index .Config.Labels "egressd-e2e"}}`}, []string{"rm", "-f"}},
	{"network", []string{"network", "ls", "-q", "--filter", "label=com.docker.compose.project"},
		[]string{"network", "inspect", "--format", `{{.Id}} {{.Created}} {{index .Labels "com.docker.compose.project"}}`}, []string{"network", "rm"}},
	{"volume", []string{"volume", "ls", "-q", "--filter", "label=com.docker.compose.project"},
		[]string{"volume", "inspect", "--format", `{{.Name}} {{.CreatedAt}} {{index .Labels "com.docker.compose.project"}}`}, []string{"volume", "rm", "-f"}},
	{"image", []string{"images", "-q", "--filter", "label=egressd-e2e"},
		[]string{"image", "inspect", "--format", `{{.Id}} {{.Created}} {{index .Config.Labels "egressd-e2e"}}`}, []string{"rmi", "-f"}},
}

// sweep removes this test's containers, networks, volumes, images (by
// label, project name starting with prefix) older than age, and host-wall
// rules for bridges named prefix... that no longer exist.
func sweep(t *testing.T, ctx context.Context, prefix string, age time.Duration) {
	for _, kind := range sweepKinds {
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
			if len(f) != 3 || !strings.HasPrefix(f[2], prefix) {
				continue
			}
			created, err := time.Parse(time.RFC3339Nano, f[1])
			if err != nil || time.Since(created) < age {
				continue
			}
			if _, err := runCmd(ctx, nil, "docker", append(kind.rm, f[0])...); err != nil {
				t.Logf("sweep: %v", err)
			} else {
				t.Logf("sweep: removed stale %s %s of %s", kind.name, f[0], f[2])
			}
		}
	}
	sweepHostwall(t, ctx, prefix)
}

// sweepHostwall removes host-wall rules for test bridges that no longer
// exist. Such a rule is inert (it names an absent interface) but should not
// accumulate.
func sweepHostwall(t *testing.T, ctx context.Context, prefix string) {
	rule := regexp.MustCompile(`-i (` + regexp.QuoteMeta(prefix) + `[0-9a-z]*) .*` + hostwall.Tag)
	for _, tool := range []string{"iptables", "ip6tables"} {
		r, err := runCmd(ctx, nil, tool, "-w", "-S", "INPUT")
		if err != nil {
			t.Logf("sweep: %v", err)
			continue
		}
		for _, m := range rule.FindAllStringSubmatch(r.out, -1) {
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
		"--host=gateway", "--ports=" + portList(append(slices.Clone(probe.DefaultPorts), hostPort)),
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

// TestSweep leaves objects behind the way a killed run would (a network,
// a volume, an image and a container of a project, a host-wall rule for a
// bridge that is gone) under a prefix of its own, and checks the sweep
// removes them all.
func TestSweep(t *testing.T) {
	ctx := testContext(t)
	preflight(t, ctx)
	prefix := "egde2esw" + randHex(t, 2)
	project := prefix + "x"
	must(t, ctx, nil, "docker", "network", "create", "--label", "com.docker.compose.project="+project, project+"_net")
	must(t, ctx, nil, "docker", "volume", "create", "--label", "com.docker.compose.project="+project, project+"_vol")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /\n"), 0o644)
	image := project + ":sweep"
	must(t, ctx, nil, "docker", "build", "-q", "--label=egressd-e2e="+project, "-t", image, dir)
	must(t, ctx, nil, "docker", "create", "--name", project+"_c", image, "/none")
	if err := hostwall.Apply(ctx, project); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // only if the sweep failed to
		hostwall.Remove(context.Background(), project)
		runCmd(context.Background(), nil, "docker", "rm", "-f", project+"_c")
		runCmd(context.Background(), nil, "docker", "rmi", "-f", image)
		runCmd(context.Background(), nil, "docker", "network", "rm", project+"_net")
		runCmd(context.Background(), nil, "docker", "volume", "rm", "-f", project+"_vol")
	})

	sweep(t, ctx, prefix, 0)

	for _, probe := range [][]string{
		{"container", "inspect", project + "_c"}, {"image", "inspect", image},
		{"network", "inspect", project + "_net"}, {"volume", "inspect", project + "_vol"},
	} {
		if _, err := runCmd(ctx, nil, "docker", probe...); err == nil {
			t.Errorf("after the sweep, docker %s still finds it", strings.Join(probe, " "))
		}
	}
	if st, err := hostwall.Installed(ctx, project); err != nil || st.IPv4 || st.IPv6 {
		t.Errorf("after the sweep, host-wall rule for %s: %+v, %v; want gone", project, st, err)
	}
}
