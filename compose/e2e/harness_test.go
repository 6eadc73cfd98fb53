//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cmdResult is what a command did.
type cmdResult struct {
	out  string // stdout
	err  string // stderr
	code int
}

// runCmd runs name with args (never through a shell) and env added to the
// test's environment, bounded by ctx.
func runCmd(ctx context.Context, env []string, name string, args ...string) (cmdResult, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := cmdResult{out: stdout.String(), err: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if err != nil {
		return r, fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, tail(r.out), tail(r.err))
	}
	return r, nil
}

func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

// must runs a command and fails the test if it fails.
func must(t *testing.T, ctx context.Context, env []string, name string, args ...string) string {
	t.Helper()
	r, err := runCmd(ctx, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r.out
}

// preflight fails the test, loudly, when the tools it needs are missing: a
// containment test that did not run has shown nothing.
func preflight(t *testing.T, ctx context.Context) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the containment test must run as root: it installs and removes host firewall rules (hostwall)")
	}
	for _, tool := range []string{"go", "docker", "docker-compose", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the containment test needs %s on PATH: %v", tool, err)
		}
	}
	if _, err := runCmd(ctx, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("the Docker engine is not reachable: %v", err)
	}
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// repoRoot is the module root: the test runs in compose/e2e.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

// buildStatic compiles a package into dir/name as a static binary that
// runs in a FROM-scratch image.
func buildStatic(t *testing.T, ctx context.Context, root, pkg, out string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, b, mode)
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies a directory of regular files (compose/rootfs).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		copyFile(t, path, filepath.Join(dst, rel), 0o644)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// usedPrefixes lists every subnet the host or Docker already uses, so the
// test's networks never overlap anything real.
func usedPrefixes(t *testing.T, ctx context.Context) []netip.Prefix {
	t.Helper()
	var used []netip.Prefix
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			used = append(used, p.Masked())
		}
	}
	ids := strings.Fields(must(t, ctx, nil, "docker", "network", "ls", "-q"))
	if len(ids) == 0 {
		return used
	}
	out := must(t, ctx, nil, "docker", append([]string{"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, ids...)...)
	for _, s := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(s); err == nil {
			used = append(used, p.Masked())
		}
	}
	return used
}

// freeSubnets picks n distinct random /24s in 10.128.0.0/9 that overlap
// nothing in use.
func freeSubnets(t *testing.T, ctx context.Context, n int) []netip.Prefix {
	t.Helper()
	used := usedPrefixes(t, ctx)
	var out []netip.Prefix
	for try := 0; try < 200 && len(out) < n; try++ {
		b := make([]byte, 2)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 | b[0]&0x7f, b[1], 0}), 24)
		free := true
		for _, u := range append(used, out...) {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			out = append(out, p)
		}
	}
	if len(out) < n {
		t.Fatalf("no free /24 found in 10.128.0.0/9 after 200 tries (in use: %v)", used)
	}
	return out
}

// nth returns the n-th address of p (n=1 is the first host address).
func nth(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// decodeJSON unmarshals s or fails the test naming what it was.
func decodeJSON(t *testing.T, what, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, tail(s))
	}
}

// readAll is io.ReadAll with a bound.
func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 1<<20)) }
