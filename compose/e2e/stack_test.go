//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Test names: they exist only in the fake internet's DNS, on a network the
// test creates.
const (
	nameGranted  = "granted.e2e.test"  // granted on 80 and 443 from the start
	nameLater    = "later.e2e.test"    // granted by a live policy edit
	nameDenied   = "denied.e2e.test"   // never granted, though the fake DNS knows it
	nameProvider = "provider.e2e.test" // the fake model provider behind the gateway
	nameDB       = "db.e2e.test"       // granted by name, but resolves to a private address
	model        = "e2e/test-model"
)

// stack is one running copy of compose/compose.yaml with the test's override.
type stack struct {
	t       *testing.T
	id      string
	project string
	dir     string // project directory
	bridge  string

	hermes, outside                    netip.Prefix
	egressdIP, gatewayIP, fakeIP, dbIP netip.Addr
	egressdImage, toolsImage           string
	agentToken, realKey                string
	env                                []string
}

func newStack(t *testing.T, ctx context.Context) *stack {
	id := randHex(t, 4)
	subnets := freeSubnets(t, ctx, 2)
	// The agent network is a /28 inside a free /24: small enough that the
	// probe's lateral scan of it takes a second.
	hermes := netip.PrefixFrom(subnets[0].Addr(), 28)
	s := &stack{
		t: t, id: id, project: "egde2e" + id, bridge: "egde2e" + id,
		hermes: hermes, outside: subnets[1],
		egressdIP: nth(hermes, 2), gatewayIP: nth(hermes, 1),
		fakeIP: nth(subnets[1], 10), dbIP: nth(subnets[1], 20),
		egressdImage: "egressd-e2e-" + id + ":egressd", toolsImage: "egressd-e2e-" + id + ":tools",
		agentToken: "agent-token-" + randHex(t, 16), realKey: "sk-real-" + randHex(t, 16),
		dir: filepath.Join(t.TempDir(), "project"),
	}
	s.env = []string{
		"EGRESSD_IMAGE=" + s.egressdImage,
		"EGRESSD_IP=" + s.egressdIP.String(),
		"HERMES_SUBNET=" + s.hermes.String(),
		"HERMES_GATEWAY=" + s.gatewayIP.String(),
		"HERMES_IP_RANGE=" + netip.PrefixFrom(nth(hermes, 8), 29).String(),
		"HERMES_BRIDGE=" + s.bridge,
		"HERMES_DATA_DIR=./hermes-data",
		"EGRESSD_AGENT_TOKEN=" + s.agentToken,
	}
	t.Logf("stack %s: hermes-net %s (bridge %s, egressd %s), outside %s (fakeinternet %s, fakedb %s)",
		s.project, s.hermes, s.bridge, s.egressdIP, s.outside, s.fakeIP, s.dbIP)
	return s
}

// build compiles the binaries and builds both images: egressd with the
// repository's own compose/Dockerfile, and a tools image with the test
// programs.
func (s *stack) build(ctx context.Context) {
	t := s.t
	root := repoRoot(t)
	work := t.TempDir()
	os.Chmod(work, 0o755)

	ectx := filepath.Join(work, "egressd-context")
	buildStatic(t, ctx, root, "./cmd/egressd", filepath.Join(ectx, "egressd"))
	copyFile(t, filepath.Join(root, "compose", "Dockerfile"), filepath.Join(ectx, "Dockerfile"), 0o644)
	copyFile(t, filepath.Join(root, "compose", ".dockerignore"), filepath.Join(ectx, ".dockerignore"), 0o644)
	copyTree(t, filepath.Join(root, "compose", "rootfs"), filepath.Join(ectx, "rootfs"))
	// The image's CA bundle is the test CA: the gateway verifies the fake
	// provider exactly as it verifies a real one.
	copyFile(t, filepath.Join(s.dir, "certs", "ca.pem"), filepath.Join(ectx, "ca-certificates.crt"), 0o644)

	tctx := filepath.Join(work, "tools-context")
	for _, name := range []string{"prober", "fakeinternet", "fakedb"} {
		buildStatic(t, ctx, root, "./compose/e2e/cmd/"+name, filepath.Join(tctx, name))
	}
	writeFile(t, filepath.Join(tctx, "Dockerfile"), []byte("FROM scratch\nCOPY prober fakeinternet fakedb /\n"), 0o644)

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := runCmd(ctx, nil, "docker", "rmi", "-f", s.egressdImage, s.toolsImage); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	label := "--label=egressd-e2e=" + s.project
	must(t, ctx, nil, "docker", "build", "-q", label, "-t", s.egressdImage, ectx)
	must(t, ctx, nil, "docker", "build", "-q", label, "-t", s.toolsImage, tctx)
}

// writeProject lays out the project directory next to a verbatim copy of
// compose/compose.yaml: the override, env files and the policy directory.
func (s *stack) writeProject() {
	t := s.t
	root := repoRoot(t)
	copyFile(t, filepath.Join(root, "compose", "compose.yaml"), filepath.Join(s.dir, "compose.yaml"), 0o644)
	writeFile(t, filepath.Join(s.dir, "egressd.env"), []byte("OPENROUTER_API_KEY="+s.realKey+"\n"), 0o644)
	writeFile(t, filepath.Join(s.dir, "e2e.override.yaml"), []byte(s.override()), 0o644)
	s.writePolicy(false)
	for _, d := range []string{s.dir, filepath.Dir(s.dir), filepath.Join(s.dir, "certs"), filepath.Join(s.dir, "policy")} {
		os.Chmod(d, 0o755) // containers run as other users and must traverse
	}
}

// override swaps the agent for the prober and adds the fake internet and
// database on egressd's outside network.
func (s *stack) override() string {
	records := ""
	for _, n := range []string{nameGranted, nameLater, nameDenied, nameProvider} {
		records += fmt.Sprintf("      - -record=%s=%s\n", n, s.fakeIP)
	}
	records += fmt.Sprintf("      - -record=%s=%s\n", nameDB, s.dbIP)
	return fmt.Sprintf(`# Written by the containment test: the agent is the prober.
services:
  egressd:
    # Whatever egressd resolves through the container's own resolver
    # (Docker's, which forwards to these servers) stays on the test's
    # networks too: nothing may reach the host's real resolvers.
    dns: [%[4]s]
  agent:
    image: %[1]s
    entrypoint: ["/prober"]
    command: ["idle", "-listen", ":6379"]
    volumes:
      - ./certs:/e2e/certs:ro
  fakeinternet:
    image: %[1]s
    entrypoint: ["/fakeinternet"]
    command:
%[2]s      - -api-key=%[3]s
    volumes:
      - ./certs:/e2e/certs:ro
    networks:
      outside:
        ipv4_address: %[4]s
  fakedb:
    image: %[1]s
    entrypoint: ["/fakedb"]
    networks:
      outside:
        ipv4_address: %[5]s
networks:
  outside:
    ipam:
      config:
        - subnet: %[6]s
          ip_range: %[7]s
`, s.toolsImage, records, s.realKey, s.fakeIP, s.dbIP, s.outside, netip.PrefixFrom(nth(s.outside, 128), 25))
}

// writePolicy writes policy/policy.yaml the way an editor saves: a new file
// renamed over the old one.
func (s *stack) writePolicy(withLater bool) {
	later := ""
	if withLater {
		later = fmt.Sprintf("  - host: %s\n    ports: [80, 443]\n", nameLater)
	}
	policy := fmt.Sprintf(`version: 1
mode: enforce
resolver:
  upstreams: ["%[1]s:53"]
allow:
  - host: %[2]s
    ports: [80, 443]
  - host: %[3]s          # granted by name, resolves to a private address: still denied
    ports: [5432]
%[4]snetworks:
  allow: ["%[1]s/32"]    # the fake internet sits on a private Docker subnet; only its address
providers:
  openrouter:
    upstream: https://%[5]s
    format: openai
    api_key_env: OPENROUTER_API_KEY
    client_token_env: EGRESSD_AGENT_TOKEN
budget:
  cap_usd: 5
  period: total
  prices:
    "%[6]s": {input: 1, output: 2}
`, s.fakeIP, nameGranted, nameDB, later, nameProvider, model)
	dir := filepath.Join(s.dir, "policy")
	tmp := filepath.Join(dir, ".policy.yaml.tmp")
	writeFile(s.t, tmp, []byte(policy), 0o644)
	if err := os.Rename(tmp, filepath.Join(dir, "policy.yaml")); err != nil {
		s.t.Fatal(err)
	}
}

// compose runs docker-compose on the project.
func (s *stack) compose(ctx context.Context, args ...string) (cmdResult, error) {
	base := []string{"--project-name", s.project, "--project-directory", s.dir,
		"-f", filepath.Join(s.dir, "compose.yaml"), "-f", filepath.Join(s.dir, "e2e.override.yaml")}
	return runCmd(ctx, s.env, "docker-compose", append(base, args...)...)
}

// up starts the stack and registers its teardown (logs first when the test
// failed, then down -v).
func (s *stack) up(ctx context.Context) {
	t := s.t
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := s.compose(ctx, "down", "-v", "--remove-orphans", "-t", "3"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, _ := s.compose(ctx, "logs", "--no-color", "--tail", "80")
		t.Logf("compose logs:\n%s", r.out)
	})
	if _, err := s.compose(ctx, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v", err)
	}
}

// container returns the ID of a service's container.
func (s *stack) container(ctx context.Context, service string) string {
	r, err := s.compose(ctx, "ps", "-q", service)
	if err != nil || strings.TrimSpace(r.out) == "" {
		s.t.Fatalf("no container for %s: %v", service, err)
	}
	return strings.TrimSpace(r.out)
}
