package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"gopkg.in/yaml.v3"

	"github.com/egressd/egressd/policy"
)

// These tests read the files users copy (compose/compose.yaml, the starter
// policy, the Dockerfile) and check the properties the wall depends on, so
// an edit that weakens them fails in the unit stage, before Docker runs.

type composeFile struct {
	Version  any                       `yaml:"version"`
	Name     any                       `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		Internal   bool              `yaml:"internal"`
		DriverOpts map[string]string `yaml:"driver_opts"`
		IPAM       struct {
			Config []map[string]string `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	User        string            `yaml:"user"`
	ReadOnly    bool              `yaml:"read_only"`
	CapDrop     []string          `yaml:"cap_drop"`
	CapAdd      []string          `yaml:"cap_add"`
	Profiles    []string          `yaml:"profiles"`
	DNS         []string          `yaml:"dns"`
	EnvFile     []string          `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Networks    yaml.Node         `yaml:"networks"`
}

// networkNames reads a service's networks in either list or map form.
func (s composeService) networkNames(t *testing.T) []string {
	var names []string
	switch s.Networks.Kind {
	case yaml.SequenceNode:
		if err := s.Networks.Decode(&names); err != nil {
			t.Fatal(err)
		}
	case yaml.MappingNode:
		for i := 0; i < len(s.Networks.Content); i += 2 {
			names = append(names, s.Networks.Content[i].Value)
		}
	}
	slices.Sort(names)
	return names
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func TestComposeTopology(t *testing.T) {
	c := loadCompose(t)
	if c.Version != nil || c.Name != nil {
		t.Errorf("top-level version:/name: present (%v, %v): docker-compose 1.29 rejects name:", c.Version, c.Name)
	}
	hn, ok := c.Networks["hermes-net"]
	if !ok || !hn.Internal {
		t.Fatalf("hermes-net: got internal=%v (present %v), want internal: true", hn.Internal, ok)
	}
	if hn.DriverOpts["com.docker.network.bridge.name"] == "" || hn.DriverOpts["com.docker.network.bridge.gateway_mode_ipv4"] != "isolated" {
		t.Errorf("hermes-net driver_opts %v: want a bridge name and gateway_mode_ipv4: isolated", hn.DriverOpts)
	}
	if len(hn.IPAM.Config) != 1 || hn.IPAM.Config[0]["subnet"] == "" || hn.IPAM.Config[0]["gateway"] == "" || hn.IPAM.Config[0]["ip_range"] == "" {
		t.Errorf("hermes-net ipam %v: want one fixed subnet with a gateway and an ip_range", hn.IPAM.Config)
	}

	agent := c.Services["agent"]
	if got := agent.networkNames(t); !slices.Equal(got, []string{"hermes-net"}) {
		t.Errorf("agent networks %v, want only hermes-net", got)
	}
	if len(agent.EnvFile) != 0 {
		t.Errorf("agent env_file %v: the agent must get no secrets file", agent.EnvFile)
	}
	if !slices.Contains(agent.CapDrop, "NET_RAW") && !slices.Contains(agent.CapDrop, "ALL") {
		t.Errorf("agent cap_drop %v: want NET_RAW dropped, so it cannot forge source addresses", agent.CapDrop)
	}
	if !strings.Contains(agent.Image, "@sha256:") {
		t.Errorf("agent image %q: want a digest pin", agent.Image)
	}
	if len(agent.DNS) != 1 || !strings.Contains(agent.DNS[0], "EGRESSD_IP") {
		t.Errorf("agent dns %v: want egressd's address only", agent.DNS)
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		if agent.Environment[k] != "http://egressd:3128" {
			t.Errorf("agent %s = %q, want http://egressd:3128", k, agent.Environment[k])
		}
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		v := agent.Environment[k]
		if v == "" || strings.ContainsAny(v, "/:[]*") {
			t.Errorf("agent %s = %q: want host names only (CIDRs crash httpx)", k, v)
		}
	}
	for k, v := range agent.Environment {
		if strings.HasSuffix(k, "_API_KEY") && !strings.Contains(v, "${EGRESSD_AGENT_TOKEN") {
			t.Errorf("agent %s = %q: the agent gets the agent token, never a real key", k, v)
		}
	}
	if !strings.HasPrefix(agent.Environment["OPENROUTER_BASE_URL"], "http://egressd:8080/") {
		t.Errorf("agent OPENROUTER_BASE_URL = %q, want egressd's gateway", agent.Environment["OPENROUTER_BASE_URL"])
	}
}

func TestComposeEgressdHardening(t *testing.T) {
	c := loadCompose(t)
	e := c.Services["egressd"]
	if !e.ReadOnly || e.User != "65532:65532" || !slices.Equal(e.CapDrop, []string{"ALL"}) || !slices.Equal(e.CapAdd, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("egressd: read_only=%v user=%q cap_drop=%v cap_add=%v; want true, 65532:65532, [ALL], [NET_BIND_SERVICE]",
			e.ReadOnly, e.User, e.CapDrop, e.CapAdd)
	}
	if got := e.networkNames(t); !slices.Equal(got, []string{"hermes-net", "outside"}) {
		t.Errorf("egressd networks %v, want hermes-net and outside", got)
	}
	if a := e.Environment["EGRESSD_LISTEN_ADMIN"]; !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("EGRESSD_LISTEN_ADMIN = %q: the admin listener must stay on loopback", a)
	}
	if !slices.Contains(e.Volumes, "./policy:/etc/egressd:ro") || !slices.Contains(e.Volumes, "ledger:/var/lib/egressd") {
		t.Errorf("egressd volumes %v: want the policy directory read-only and the ledger volume", e.Volumes)
	}
	p := c.Services["probe"]
	if !slices.Equal(p.Profiles, []string{"probe"}) || !slices.Equal(p.networkNames(t), []string{"hermes-net"}) {
		t.Errorf("probe: profiles %v networks %v; want [probe] and hermes-net only", p.Profiles, p.networkNames(t))
	}
}

func TestStarterPolicy(t *testing.T) {
	for _, e := range []string{"EGRESSD_LISTEN_PROXY", "EGRESSD_LISTEN_DNS", "EGRESSD_LISTEN_GATEWAY", "EGRESSD_LISTEN_ADMIN",
		"EGRESSD_MODE", "EGRESSD_RESOLVER_UPSTREAMS", "EGRESSD_LOG_FILE", "EGRESSD_BUDGET_LEDGER"} {
		t.Setenv(e, "") // empty = not set: check the file as written
	}
	p, err := policy.Load(filepath.Join("..", "policy", "policy.yaml"))
	if err != nil {
		t.Fatalf("compose/policy/policy.yaml does not load: %v", err)
	}
	cfg := p.Config()
	if cfg.Mode != "enforce" {
		t.Errorf("starter mode %q, want enforce", cfg.Mode)
	}
	if _, ok := cfg.Providers["openrouter"]; !ok || cfg.Budget.CapUSD <= 0 {
		t.Errorf("starter policy: want an openrouter gateway route and a spend cap, got %v cap %v", cfg.Providers, cfg.Budget.CapUSD)
	}
	for _, host := range []string{"api.telegram.org", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "api.github.com", "models.dev"} {
		d := p.Decide(policy.Request{Host: host, Port: 443, Proto: vocab.ProtoConnect})
		if d.Verdict != vocab.Allow {
			t.Errorf("starter policy: CONNECT %s:443 got %v %v, want allow", host, d.Verdict, d.Reason)
		}
	}
	if d := p.Decide(policy.Request{Host: "openrouter.ai", Port: 443, Proto: vocab.ProtoConnect}); d.Verdict.Allowed() {
		t.Errorf("starter policy: CONNECT openrouter.ai:443 allowed (%v): the provider must go through the gateway", d.Reason)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from, user, health string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "FROM "):
			from = line
		case strings.HasPrefix(line, "USER "):
			user = line
		case strings.HasPrefix(line, "CMD [\"/usr/local/bin/egressd\", \"health\""):
			health = line
		}
	}
	if from != "FROM scratch" || user != "USER 65532:65532" || health == "" {
		t.Errorf("Dockerfile: got %q, %q, health check %q; want FROM scratch, USER 65532:65532, egressd health", from, user, health)
	}
}
