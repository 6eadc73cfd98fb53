package daemon

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCurlThroughRoute drives the route with the real curl binary through
// Run: the allowed call carries the injected secret upstream, the refused
// one never leaves egressd, and nothing curl receives (status line,
// headers, body, verbose trace) holds the secret, although the fake API
// echoes it in a header and in its body.
func TestCurlThroughRoute(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("the curl binary is required for this test (apt-get install curl): %v", err)
	}
	const secret, agent = "ghp_CurlTestSecretValue0123456789", "agent-curl-token"
	var hits atomic.Int64
	var sawAuth atomic.Value
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		sawAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-Debug-Token", r.Header.Get("Authorization"))
		fmt.Fprintf(w, `[{"number":1,"title":"bug","echo":%q}]`, r.Header.Get("Authorization"))
	}))
	defer api.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
listen: {proxy: 127.0.0.1:0, dns: "", admin: "", gateway: 127.0.0.1:0}
networks: {allow: [127.0.0.1/32]}
apis:
  github:
    upstream: %s
    ca_file: %s
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {header: Authorization, prefix: "Bearer ", env: GITHUB_TOKEN}
    allow:
      - {methods: [GET], paths: ["/repos/acme/app/issues", "/repos/acme/app/issues/*"]}
      - {methods: [POST], paths: ["/repos/acme/app/issues/*/comments"]}
`, api.URL, ca)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"EGRESSD_AGENT_TOKEN": agent, "GITHUB_TOKEN": secret}
	a, stop := runGateway(t, path, func(k string) string { return env[k] })
	defer stop()

	tests := []struct {
		name   string
		args   []string
		status string
		hits   int64
	}{
		{"allowed GET", []string{"/github/repos/acme/app/issues?state=open"}, "HTTP/1.1 200", 1},
		{"create an issue", []string{"-X", "POST", "-d", `{"title":"x"}`, "/github/repos/acme/app/issues"}, "HTTP/1.1 403 egressd path_not_allowed: ", 0},
		{"another repo", []string{"/github/repos/evil/exfil/issues"}, "HTTP/1.1 403 egressd path_not_allowed: ", 0},
		{"wrong token", []string{"-H", "Authorization: Bearer not-the-agent-token", "/github/repos/acme/app/issues"}, "HTTP/1.1 401 egressd unauthorized: ", 0},
	}
	for _, tt := range tests {
		before := hits.Load()
		args := []string{"-sS", "-i", "-v", "--noproxy", "*"}
		if !strings.Contains(strings.Join(tt.args, " "), "Authorization") {
			args = append(args, "-H", "Authorization: Bearer "+agent)
		}
		args = append(args, tt.args[:len(tt.args)-1]...)
		args = append(args, "http://"+a.Gateway+tt.args[len(tt.args)-1])
		cmd := exec.Command(curl, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: curl: %v\n%s", tt.name, err, out)
		}
		if !strings.Contains(string(out), tt.status) {
			t.Errorf("%s: curl output lacks %q:\n%s", tt.name, tt.status, out)
		}
		if strings.Contains(string(out), secret) {
			t.Errorf("%s: the secret reached curl:\n%s", tt.name, out)
		}
		if got := hits.Load() - before; got != tt.hits {
			t.Errorf("%s: %d requests reached the API, want %d", tt.name, got, tt.hits)
		}
	}
	if got := sawAuth.Load(); got != "Bearer "+secret {
		t.Errorf("the API saw Authorization %v, want the injected secret", got)
	}

	// Around the route: CONNECT through the proxy to the routed upstream is
	// refused with use_gateway, and nothing reaches the API.
	before := hits.Load()
	cmd := exec.Command(curl, "-sS", "-v", "-x", "http://"+a.Proxy, "--cacert", ca, "-H", "Authorization: Bearer "+secret,
		api.URL+"/repos/acme/app/issues")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "X-Egressd-Reason: use_gateway") {
		t.Errorf("CONNECT to the routed upstream: err %v, want a use_gateway refusal:\n%s", err, out)
	}
	if n := hits.Load() - before; n != 0 {
		t.Errorf("CONNECT around the route reached the API %d times", n)
	}

	// The provider side of the listener is untouched: a name that is no
	// route goes to the provider gateway, which has no such provider.
	resp, err := http.Get("http://" + a.Gateway + "/openrouter/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "no provider route") {
		t.Errorf("non-route name: %d %s, want the provider gateway's 404", resp.StatusCode, b)
	}
}
