package daemon

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRouteRulesReloadLive: an edit to a route's rules applies without a
// restart, and a broken edit keeps the last good rules.
func TestRouteRulesReloadLive(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":1}`)
	}))
	defer api.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	policyWith := func(rules string) string {
		return fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
networks: {allow: [127.0.0.1/32]}
apis:
  github:
    upstream: %s
    ca_file: %s
    client_token_env: AGENT
    secret: {header: Authorization, prefix: "Bearer ", env: GH}
    allow:
%s`, api.URL, ca, rules)
	}
	const getOnly = "      - {methods: [GET], paths: [\"/repos/acme/app/issues\"]}\n"
	const withPost = getOnly + "      - {methods: [POST], paths: [\"/repos/acme/app/issues/*/comments\"]}\n"
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(policyWith(getOnly)), 0o644); err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{})
	ready := make(chan Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	env := map[string]string{"AGENT": "agent-tok", "GH": "ghp_reloadsecret"}
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Env: func(k string) string { return env[k] }, Stdout: io.Discard,
			Reload: reload, Logger: slog.New(slog.DiscardHandler), Ready: func(a Addrs) { ready <- a }})
	}()
	defer func() { cancel(); <-done }()
	var a Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	comment := func() int {
		req, _ := http.NewRequest("POST", "http://"+a.Gateway+"/github/repos/acme/app/issues/3/comments", strings.NewReader(`{"body":"x"}`))
		req.Header.Set("Authorization", "Bearer agent-tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := comment(); got != http.StatusForbidden {
		t.Fatalf("comment before the grant: status %d, want 403", got)
	}
	if err := os.WriteFile(path, []byte(policyWith(withPost)), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new route rule applied", func() bool { return comment() == http.StatusCreated })

	broken := strings.Replace(policyWith(getOnly), "client_token_env", "client_token", 1)
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{} // taken once the previous reload is done; the second send waits for this one
	reload <- struct{}{}
	if got := comment(); got != http.StatusCreated {
		t.Errorf("after a broken edit: status %d, want 201 (the last good rules stay)", got)
	}
}
