package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExplainAPIRoute(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(`version: 1
apis:
  github:
    upstream: https://api.github.com
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {header: Authorization, prefix: "Bearer ", env: GITHUB_TOKEN}
    allow:
      - {methods: [GET], paths: ["/repos/acme/app/issues", "/repos/acme/app/issues/*"]}
  git:
    upstream: https://git.example.com
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {basic: {user: x-access-token, password_env: GIT_TOKEN}}
    allow:
      - {methods: [GET], paths: ["/acme/app.git/info/refs?service=git-upload-pack"]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"api:github", "GET", "/repos/acme/app/issues"}, 0, []string{"allow", "allowlisted", "apis.github.allow[0]"}},
		{[]string{"api:github", "GET", "/repos//acme/app/issues/7/"}, 0, []string{"/repos/acme/app/issues/7", "allowlisted"}},
		{[]string{"api:github", "POST", "/repos/acme/app/issues"}, 1, []string{"deny", "path_not_allowed", `{methods: [POST], paths: ["/repos/acme/app/issues"]}`}},
		{[]string{"api:github", "GET", "/repos/acme/%2e%2e/x"}, 1, []string{"bad_request", ". or .."}},
		{[]string{"api:git", "GET", "/acme/app.git/info/refs?service=git-upload-pack"}, 0, []string{"allowlisted"}},
		{[]string{"api:git", "GET", "/acme/app.git/info/refs?service=git-receive-pack"}, 1, []string{"path_not_allowed", "?service=git-receive-pack"}},
		{[]string{"api.github.com"}, 1, []string{"use_gateway", "http://<gateway>/github"}},
	}
	for _, tt := range tests {
		out, errOut, code := run(t, append([]string{"explain", "--config", pol}, tt.args...)...)
		if code != tt.code {
			t.Errorf("explain %v: exit %d, want %d (stdout %q stderr %q)", tt.args, code, tt.code, out, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("explain %v = %q, want it to contain %q", tt.args, out, w)
			}
		}
	}
	if _, errOut, code := run(t, "explain", "--config", pol, "api:gitlab", "GET", "/"); code != 1 || !strings.Contains(errOut, "no apis: route") {
		t.Errorf("explain on an unknown route: exit %d stderr %q, want 1 naming the missing route", code, errOut)
	}
}
