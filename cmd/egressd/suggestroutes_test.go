package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

const routePolicy = `version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
log: {file: %s}
apis:
  github:
    upstream: https://api.github.com
    client_token_env: AGENT
    secret: {header: Authorization, prefix: "Bearer ", env: GH}
    allow:
      - {methods: [GET], paths: ["/repos/acme/app/issues"]}
`

// TestSuggestRouteRulesFromLiveRefusals: calls a running egressd refuses
// with path_not_allowed (nothing is dialed) come back from `suggest` as
// apis.github.allow entries that, pasted into the route, allow exactly
// those calls.
func TestSuggestRouteRulesFromLiveRefusals(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "decisions.log")
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(fmt.Sprintf(routePolicy, logPath)), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENT": "agent-tok", "GH": "ghp_never_used"}
	a := serveDaemon(t, pol, func(k string) string { return env[k] })
	calls := [][2]string{{"POST", "/repos/acme/app/issues/7/comments"}, {"GET", "/repos/acme/app/issues/7"}}
	for _, c := range calls {
		req, _ := http.NewRequest(c[0], "http://"+a.Gateway+"/github"+c[1], nil)
		req.Header.Set("Authorization", "Bearer agent-tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s %s: status %d, want 403", c[0], c[1], resp.StatusCode)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte(`"path":"/repos/acme/app/issues/7"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals not in %s within 10s", logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, errOut, code := run(t, "suggest", "--file", logPath)
	if code != 0 {
		t.Fatalf("suggest: exit %d: %s", code, errOut)
	}
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "      - {methods:") {
			rules = append(rules, line)
		}
	}
	if !strings.Contains(out, "apis:\n  github:\n    allow:\n") || len(rules) != len(calls) {
		t.Fatalf("suggest output lacks one apis.github.allow entry per refused call:\n%s", out)
	}
	granted, err := policy.LoadBytes([]byte(fmt.Sprintf(routePolicy, logPath)+strings.Join(rules, "\n")+"\n"), "granted.yaml")
	if err != nil {
		t.Fatalf("policy with the suggested rules: %v", err)
	}
	for _, c := range calls {
		if d := granted.DecideAPI("github", c[0], c[1], ""); d.Verdict != vocab.Allow {
			t.Errorf("after pasting the suggestions, %s %s is %s", c[0], c[1], d.Reason)
		}
	}
	if d := granted.DecideAPI("github", "DELETE", "/repos/acme/app/issues/7", ""); d.Verdict == vocab.Allow {
		t.Error("the suggestions granted more than the refused calls")
	}
}
