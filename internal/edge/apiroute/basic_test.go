package apiroute

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestBasicSecretScrubbed: with a basic-auth secret, the upstream gets
// x-access-token:<secret>, and neither the password nor the base64
// credential it could echo reaches the agent.
func TestBasicSecretScrubbed(t *testing.T) {
	const pw = "gho_BasicSecretValue987654321"
	cred := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + pw))
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		fmt.Fprintf(w, "auth=%s user=%s pass=%s\n", r.Header.Get("Authorization"), u, p)
	}))
	defer api.Close()
	y := fmt.Sprintf(`version: 1
networks: {allow: [127.0.0.0/8]}
apis:
  git:
    upstream: %s
    ca_file: %s
    client_token_env: AGENT
    secret: {basic: {user: x-access-token, password_env: GIT_TOKEN}}
    allow: [{methods: [GET], paths: ["/**"]}]
`, api.URL, writeCA(t, api))
	pol, err := policy.LoadBytes([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENT": agentToken, "GIT_TOKEN": pw}
	srv := httptest.NewServer(New(Config{Policy: func() *policy.Policy { return pol },
		Env: func(k string) string { return env[k] }, Logger: quiet}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/git/acme/app.git/info/refs", nil)
	req.SetBasicAuth("agent", agentToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != 200 || !strings.Contains(body, "user=x-access-token") {
		t.Fatalf("status %d body %q, want 200 from the upstream with the injected user", resp.StatusCode, body)
	}
	for _, s := range []string{pw, cred, agentToken} {
		if strings.Contains(body, s) {
			t.Errorf("body %q holds %q", body, s)
		}
	}
	if !strings.Contains(body, "auth=Basic [egressd:redacted]") {
		t.Errorf("body %q, want the echoed credential masked", body)
	}
}
