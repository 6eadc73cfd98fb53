//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cli/hostwall"
)

// TestContainment starts the reference compose topology with the prober as
// the agent and checks, from inside hermes-net, that egressd is the only
// way out; then it edits the policy live and runs `egressd probe` with and
// without the host wall.
func TestContainment(t *testing.T) {
	ctx := testContext(t)
	preflight(t, ctx)
	sweepStale(t, ctx)

	s := newStack(t, ctx)
	writeCerts(t, filepath.Join(s.dir, "certs"), []string{nameGranted, nameLater, nameDenied, nameProvider})
	s.writeProject()
	start := time.Now()
	s.build(ctx)
	t.Logf("built binaries and images in %s", time.Since(start).Round(time.Second))
	start = time.Now()
	s.up(ctx)
	t.Logf("stack up (egressd healthy) in %s", time.Since(start).Round(time.Second))
	agent := s.container(ctx, "agent")

	t.Run("wall", func(t *testing.T) { s.testWall(t, ctx, agent) })
	t.Run("gateway", func(t *testing.T) { s.testGateway(t, ctx, agent) })
	t.Run("reload", func(t *testing.T) { s.testReload(t, ctx, agent) })
	t.Run("operator", func(t *testing.T) { s.testOperator(t, ctx) })
	t.Run("probe", func(t *testing.T) { s.testProbe(t, ctx, agent) })
}

// testOperator runs the README's operator commands inside the egressd
// container, as `docker compose exec egressd egressd ...` does.
func (s *stack) testOperator(t *testing.T, ctx context.Context) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"tail", "--denied", "-n", "0"}, []string{nameDenied}},
		{[]string{"suggest"}, []string{nameDenied}},
		{[]string{"status"}, []string{"policy"}},
		{[]string{"check", "/etc/egressd/policy.yaml"}, []string{"ok"}},
	} {
		r, err := s.compose(ctx, append([]string{"exec", "-T", "egressd", "egressd"}, tc.args...)...)
		if err != nil {
			t.Errorf("egressd %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(r.out, w) {
				t.Errorf("egressd %s: output does not mention %q:\n%s", strings.Join(tc.args, " "), w, tail(r.out))
			}
		}
		t.Logf("egressd %s:\n%s", strings.Join(tc.args, " "), tail(r.out))
	}
}

// testContext ends well before the test binary's own timeout, so a stuck
// step fails and the cleanups still run (a timeout panic skips them).
func testContext(t *testing.T) context.Context {
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(20 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-3*time.Minute))
	t.Cleanup(cancel)
	return ctx
}

const caFile = "/e2e/certs/ca.pem"

func (s *stack) proxyURL() string { return "http://egressd:3128" }

// wallChecks is what the agent tries in testWall.
func (s *stack) wallChecks() []check {
	p, eip := s.proxyURL(), s.egressdIP.String()
	tcp := func(id string, ip fmt.Stringer, port int) check {
		return check{ID: id, Kind: "tcp", Target: net.JoinHostPort(ip.String(), fmt.Sprint(port)), TimeoutMS: 2000}
	}
	return []check{
		{ID: "http-granted", Kind: "http", Proxy: p, URL: "http://" + nameGranted + "/plain"},
		{ID: "https-granted", Kind: "http", Proxy: p, URL: "https://" + nameGranted + "/tls", CAFile: caFile},
		{ID: "dns-granted-docker", Kind: "dns", Server: "127.0.0.11:53", Name: nameGranted},
		{ID: "dns-granted-egressd", Kind: "dns", Server: eip + ":53", Name: nameGranted},
		{ID: "http-denied", Kind: "http", Proxy: p, URL: "http://" + nameDenied + "/"},
		{ID: "connect-denied", Kind: "connect", Proxy: p, Target: nameDenied + ":443"},
		{ID: "dns-denied-docker", Kind: "dns", Server: "127.0.0.11:53", Name: nameDenied},
		{ID: "dns-denied-egressd", Kind: "dns", Server: eip + ":53", Name: nameDenied},
		tcp("db-direct", s.dbIP, 5432),
		{ID: "db-proxy-name", Kind: "connect", Proxy: p, Target: nameDB + ":5432"},
		{ID: "db-proxy-ip", Kind: "connect", Proxy: p, Target: s.dbIP.String() + ":5432"},
		{ID: "db-proxy-ip-http", Kind: "http", Proxy: p, URL: "http://" + s.dbIP.String() + ":5432/"},
		tcp("fake-direct-443", s.fakeIP, 443),
		tcp("fake-direct-80", s.fakeIP, 80),
		{ID: "fake-direct-dns", Kind: "dns", Server: s.fakeIP.String() + ":53", Name: nameGranted, TimeoutMS: 2000},
		tcp("admin", s.egressdIP, 9090),
		tcp("host-gateway-22", s.gatewayIP, 22),
		tcp("host-gateway-80", s.gatewayIP, 80),
	}
}

func (s *stack) testWall(t *testing.T, ctx context.Context, agent string) {
	res := s.fromAgent(t, ctx, agent, s.wallChecks())

	wantStatus(t, res["http-granted"], 200, "host="+nameGranted, "path=/plain", "tls=false")
	wantStatus(t, res["https-granted"], 200, "host="+nameGranted, "path=/tls", "tls=true")
	for _, id := range []string{"dns-granted-docker", "dns-granted-egressd"} {
		if r := res[id]; r.Err != "" || r.Rcode != "NOERROR" || !slices.Equal(r.Addrs, []string{s.fakeIP.String()}) {
			t.Errorf("%s: got %v, want NOERROR [%s]", id, r, s.fakeIP)
		}
	}
	wantDenied(t, res["http-denied"], "not_allowlisted")
	wantDenied(t, res["connect-denied"], "not_allowlisted")
	for _, id := range []string{"dns-denied-docker", "dns-denied-egressd"} {
		if r := res[id]; r.Err != "" || r.Rcode != "NXDOMAIN" || r.MS > 1500 {
			t.Errorf("%s: got %v, want NXDOMAIN within 1.5s", id, r)
		}
	}
	wantNoRoute(t, res["db-direct"])
	wantDenied(t, res["db-proxy-name"], "")
	wantDenied(t, res["db-proxy-ip"], "")
	wantDenied(t, res["db-proxy-ip-http"], "")
	wantNoRoute(t, res["fake-direct-443"])
	wantNoRoute(t, res["fake-direct-80"])
	if r := res["fake-direct-dns"]; r.Err == "" {
		t.Errorf("fake-direct-dns: got an answer %v, want none (no route out)", r)
	}
	if r := res["admin"]; r.Reach == "connected" {
		t.Errorf("admin: egressd's admin port is reachable from hermes-net: %v", r)
	}
	for _, id := range []string{"host-gateway-22", "host-gateway-80"} {
		t.Logf("measured, no hostwall yet: %s %s (the host's address on hermes-net)", id, res[id].Reach)
	}
	for _, id := range []string{"db-proxy-name", "db-proxy-ip", "db-proxy-ip-http", "http-denied"} {
		t.Logf("%s: %d %s", id, res[id].Status, res[id].Reason)
	}

	s.checkNothingLeaked(t, ctx)
}

// checkNothingLeaked asks the fake internet what reached it: never the
// denied name, in DNS or HTTP; the granted name, through egressd's resolver.
func (s *stack) checkNothingLeaked(t *testing.T, ctx context.Context) {
	sn := s.fakeSeen(t, ctx)
	if sn.queried(nameDenied) {
		t.Errorf("the fake internet's DNS saw a query for %s: egressd forwarded an ungranted name", nameDenied)
	}
	if !sn.queried(nameGranted) {
		t.Errorf("the fake internet's DNS never saw %s: the granted lookups did not go through it", nameGranted)
	}
	for _, r := range sn.Requests {
		if strings.EqualFold(r.Host, nameDenied) || strings.HasPrefix(strings.ToLower(r.Host), nameDenied+":") {
			t.Errorf("the fake internet got a request for %s: %+v", nameDenied, r)
		}
	}
}

// wantStatus checks an HTTP result's status and that its body has each part.
func wantStatus(t *testing.T, r result, status int, parts ...string) {
	t.Helper()
	if r.Err != "" || r.Status != status {
		t.Errorf("%s: got %v, want status %d", r.ID, r, status)
		return
	}
	for _, p := range parts {
		if !strings.Contains(r.Body, p) {
			t.Errorf("%s: body %q does not contain %q", r.ID, r.Body, p)
		}
	}
}

// wantDenied checks a proxy answered 403 with egressd's reason header (the
// given reason, when not empty).
func wantDenied(t *testing.T, r result, reason string) {
	t.Helper()
	if r.Err != "" || r.Status != 403 || r.Reason == "" || (reason != "" && r.Reason != reason) {
		t.Errorf("%s: got %v, want 403 with X-Egressd-Reason %q", r.ID, r, reason)
	}
}

// wantNoRoute checks a direct TCP attempt got no answer at all.
func wantNoRoute(t *testing.T, r result) {
	t.Helper()
	if r.Reach != "filtered" && r.Reach != "unreachable" {
		t.Errorf("%s: got %v, want no route (filtered or unreachable)", r.ID, r)
	}
}

func (s *stack) testGateway(t *testing.T, ctx context.Context, agent string) {
	url := "http://egressd:8080/openrouter/api/v1/chat/completions"
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"max_tokens":16}`, model)
	stream := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"max_tokens":16,"stream":true}`, model)
	hdr := func(token string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}
	}
	res := s.fromAgent(t, ctx, agent, []check{
		{ID: "chat", Kind: "http", URL: url, Method: "POST", Body: body, Header: hdr(s.agentToken), TimeoutMS: 15000},
		{ID: "chat-stream", Kind: "http", URL: url, Method: "POST", Body: stream, Header: hdr(s.agentToken), TimeoutMS: 15000},
		{ID: "chat-wrong-token", Kind: "http", URL: url, Method: "POST", Body: body, Header: hdr("not-the-token"), TimeoutMS: 15000},
		{ID: "env", Kind: "env"},
	})
	wantStatus(t, res["chat"], 200, "hello from the fake provider", `"prompt_tokens":11`)
	wantStatus(t, res["chat-stream"], 200, "data: ", "provider")
	if r := res["chat-wrong-token"]; r.Status != 401 {
		t.Errorf("chat-wrong-token: got %v, want 401", r)
	}
	for id, r := range res {
		if strings.Contains(r.String(), s.realKey) {
			t.Errorf("%s: the real provider key reached the agent: %v", id, r)
		}
	}
	inspect := must(t, ctx, nil, "docker", "inspect", "--format", "{{json .Config.Env}}", agent)
	if strings.Contains(inspect, s.realKey) {
		t.Errorf("the agent container's configured environment holds the real key: %s", inspect)
	}

	sn := s.fakeSeen(t, ctx)
	calls := 0
	for _, r := range sn.Requests {
		if !strings.HasSuffix(r.Path, "/chat/completions") {
			continue
		}
		calls++
		if strings.Contains(r.Authorization, s.agentToken) {
			t.Errorf("the provider received the agent token: %+v", r)
		}
		if r.Authorization != "Bearer "+s.realKey {
			t.Errorf("provider request without the real key: %+v", r)
		}
		if !r.TLS || r.Host != nameProvider || r.Path != "/api/v1/chat/completions" {
			t.Errorf("provider request: got %+v, want TLS to %s /api/v1/chat/completions", r, nameProvider)
		}
	}
	if calls != 2 {
		t.Errorf("the provider saw %d chat calls, want 2 (the wrong token must never reach it)", calls)
	}
	s.checkMetered(t, ctx, 2)
}

// checkMetered reads egressd's decision log (its stdout) and checks that
// want calls were metered with the fake provider's usage and a cost.
func (s *stack) checkMetered(t *testing.T, ctx context.Context, want int) {
	logs := must(t, ctx, nil, "docker", "logs", s.container(ctx, "egressd"))
	got := 0
	for line := range strings.Lines(logs) {
		var e struct {
			Event        string  `json:"event"`
			Provider     string  `json:"provider"`
			Model        string  `json:"model"`
			InputTokens  int64   `json:"input_tokens"`
			OutputTokens int64   `json:"output_tokens"`
			CostUSD      float64 `json:"cost_usd"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Event != "usage" {
			continue
		}
		got++
		if e.Provider != "openrouter" || e.Model != model || e.InputTokens != 11 || e.OutputTokens != 7 || e.CostUSD <= 0 {
			t.Errorf("usage entry %+v: want openrouter %s, 11 in, 7 out, a cost", e, model)
		}
	}
	if got != want {
		t.Errorf("egressd logged %d usage entries, want %d", got, want)
	}
}

func (s *stack) testReload(t *testing.T, ctx context.Context, agent string) {
	later := []check{
		{ID: "later-http", Kind: "http", Proxy: s.proxyURL(), URL: "http://" + nameLater + "/"},
		{ID: "later-dns", Kind: "dns", Server: "127.0.0.11:53", Name: nameLater},
	}
	res := s.fromAgent(t, ctx, agent, later)
	wantDenied(t, res["later-http"], "not_allowlisted")
	if r := res["later-dns"]; r.Rcode != "NXDOMAIN" {
		t.Fatalf("later-dns before the grant: got %v, want NXDOMAIN", r)
	}

	s.writePolicy(true)
	edited := time.Now()
	deadline := edited.Add(30 * time.Second)
	for {
		res = s.fromAgent(t, ctx, agent, later)
		if res["later-http"].Status == 200 && res["later-dns"].Rcode == "NOERROR" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the policy edit the new grant is not in effect: %v %v", res["later-http"], res["later-dns"])
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Logf("new grant in effect %s after the edit, no restart", time.Since(edited).Round(100*time.Millisecond))
	wantStatus(t, res["later-http"], 200, "host="+nameLater)
}

// testProbe runs `egressd probe` in the compose probe service against a
// listener the test opens on the host's address on hermes-net: without the
// host wall it must report the hole and fail, with it pass.
func (s *stack) testProbe(t *testing.T, ctx context.Context, agent string) {
	gw := strings.TrimSpace(must(t, ctx, nil, "docker", "network", "inspect", "--format",
		"{{range .IPAM.Config}}{{.Gateway}}{{end}}", s.project+"_hermes-net"))
	if gw != s.gatewayIP.String() {
		t.Fatalf("hermes-net gateway is %q, want %s (compose.yaml's HERMES_GATEWAY)", gw, s.gatewayIP)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.gatewayIP.String(), "0"))
	if err != nil {
		t.Fatalf("listening on the hermes-net host address: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hostPort := ln.Addr().(*net.TCPAddr).Port

	rep, code := s.runProbe(t, ctx, hostPort)
	if code == 0 {
		t.Errorf("probe without the host wall: exit 0, want non-zero")
	}
	if r := rep.find("host", s.gatewayIP.String()); r.Status != "HOLE" || !strings.Contains(r.Detail, fmt.Sprint(hostPort)) {
		t.Errorf("probe without the host wall: host %s got %+v, want a HOLE naming port %d", s.gatewayIP, r, hostPort)
	}

	t.Cleanup(func() {
		if err := hostwall.Remove(context.Background(), s.bridge); err != nil {
			t.Errorf("cleanup: hostwall.Remove(%s): %v", s.bridge, err)
		}
	})
	if err := hostwall.Apply(ctx, s.bridge); err != nil {
		t.Fatalf("hostwall.Apply(%s): %v", s.bridge, err)
	}
	rep, code = s.runProbe(t, ctx, hostPort)
	if code != 0 || rep.count("HOLE")+rep.count("FAIL") != 0 {
		t.Errorf("probe with the host wall: exit %d, %d holes, %d failures; want 0, 0, 0:\n%s", code, rep.count("HOLE"), rep.count("FAIL"), rep)
	}
	agentIP := strings.TrimSpace(must(t, ctx, nil, "docker", "inspect", "--format",
		"{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", agent))
	if r := rep.find("lateral", agentIP); r.Status != "INFO" || !strings.Contains(r.Detail, "6379") {
		t.Errorf("probe lateral scan: agent %s got %+v, want INFO answering on 6379", agentIP, r)
	}

	res := s.fromAgent(t, ctx, agent, []check{
		{ID: "host-after-wall", Kind: "tcp", Target: net.JoinHostPort(s.gatewayIP.String(), fmt.Sprint(hostPort)), TimeoutMS: 2000},
		{ID: "granted-after-wall", Kind: "http", Proxy: s.proxyURL(), URL: "https://" + nameGranted + "/", CAFile: caFile},
	})
	wantNoRoute(t, res["host-after-wall"])
	wantStatus(t, res["granted-after-wall"], 200, "tls=true")
}
