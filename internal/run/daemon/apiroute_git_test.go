package daemon

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	gitSecret     = "ghs_GitServerTokenNeverSeenByTheAgent42"
	gitAgentToken = "agent-token-for-git-7f3a"
)

// gitEnv is a clean environment for the git binary: no user or system
// config, no proxy variables, no prompts.
func gitEnv(home string) []string {
	return []string{
		"HOME=" + home, "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"LC_ALL=C",
	}
}

func runGit(t *testing.T, dir, home string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = dir, gitEnv(home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustGit(t *testing.T, dir, home string, args ...string) {
	t.Helper()
	if out, err := runGit(t, dir, home, args...); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// gitServer is a smart-HTTP git host: git http-backend under net/http/cgi,
// TLS on loopback (httptest's certificate names 127.0.0.1), requiring HTTP basic auth x-access-token:<gitSecret>
// like a forge's token auth. Pushes are enabled on the repository, so only
// egressd stands between the agent and a push.
type gitServer struct {
	srv  *httptest.Server
	hits atomic.Int64 // requests that reached the server at all
	root string
}

func newGitServer(t *testing.T, home string) *gitServer {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("the git binary is required for this test (apt-get install git): %v", err)
	}
	g := &gitServer{root: t.TempDir()}
	work := t.TempDir()
	mustGit(t, work, home, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("private repo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGit(t, work, home, "add", "README")
	mustGit(t, work, home, "commit", "-q", "-m", "first")
	bare := filepath.Join(g.root, "acme", "app.git")
	mustGit(t, work, home, "clone", "-q", "--bare", work, bare)
	mustGit(t, bare, home, "config", "http.receivepack", "true")

	backend := &cgi.Handler{Path: gitPath, Args: []string{"http-backend"}, Dir: g.root,
		Env: []string{"GIT_PROJECT_ROOT=" + g.root, "GIT_HTTP_EXPORT_ALL=1", "HOME=" + home, "GIT_CONFIG_NOSYSTEM=1"}}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		if u, p, ok := r.BasicAuth(); !ok || u != "x-access-token" || p != gitSecret {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	return g
}

// TestGitCloneThroughRoute is the proof for apis: routes: the real git
// binary clones a private repository through egressd holding only its
// agent token, and a push through the same route is refused before
// anything reaches the server.
func TestGitCloneThroughRoute(t *testing.T) {
	home := t.TempDir()
	g := newGitServer(t, home)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: g.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
networks: {allow: [127.0.0.1/32]}   # the git server; egressd's own ports stay refused
apis:
  git:
    upstream: %s
    ca_file: %s
    client_token_env: EGRESSD_AGENT_TOKEN
    secret: {basic: {user: x-access-token, password_env: GIT_TOKEN}}
    allow:
      - {methods: [GET], paths: ["/acme/app.git/info/refs?service=git-upload-pack"]}
      - {methods: [POST], paths: ["/acme/app.git/git-upload-pack"]}
`, g.srv.URL, ca)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"EGRESSD_AGENT_TOKEN": gitAgentToken, "GIT_TOKEN": gitSecret}
	a, stop := runGateway(t, path, func(k string) string { return env[k] })
	defer stop()

	clone := filepath.Join(t.TempDir(), "app")
	url := fmt.Sprintf("http://agent:%s@%s/git/acme/app.git", gitAgentToken, a.Gateway)
	out, err := runGit(t, home, home, "clone", url, clone)
	if err != nil {
		t.Fatalf("git clone through egressd: %v\n%s", err, out)
	}
	if strings.Contains(out, gitSecret) {
		t.Errorf("git's output holds the secret:\n%s", out)
	}
	got, err := os.ReadFile(filepath.Join(clone, "README"))
	if err != nil || string(got) != "private repo\n" {
		t.Fatalf("cloned README = %q, %v; want the repository's file", got, err)
	}
	if g.hits.Load() == 0 {
		t.Fatal("the clone never reached the git server")
	}

	// The README's other form: the usual URL rewritten to the route and the
	// token in a header, so the remote URL holds no credential.
	clone2 := filepath.Join(t.TempDir(), "app2")
	out, err = runGit(t, home, home,
		"-c", fmt.Sprintf("url.http://%s/git/.insteadOf=https://git.example.com/", a.Gateway),
		"-c", "http.extraHeader=Authorization: Bearer "+gitAgentToken,
		"clone", "https://git.example.com/acme/app.git", clone2)
	if err != nil {
		t.Fatalf("git clone with insteadOf and extraHeader: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(clone2, "README")); err != nil || string(got) != "private repo\n" {
		t.Fatalf("second clone README = %q, %v", got, err)
	}

	// A push through the same route: refused by egressd, nothing reaches
	// the server, and the server's branch is unchanged.
	mustGit(t, clone, home, "commit", "-q", "--allow-empty", "-m", "agent change")
	before := g.hits.Load()
	out, err = runGit(t, clone, home, "push", "origin", "HEAD:main")
	if err == nil {
		t.Fatalf("git push through a read-only route succeeded:\n%s", out)
	}
	if !strings.Contains(out, "403") {
		t.Errorf("git push output = %q, want the 403 refusal", out)
	}
	if n := g.hits.Load() - before; n != 0 {
		t.Errorf("the push sent %d requests to the git server, want 0", n)
	}
	head, _ := runGit(t, filepath.Join(g.root, "acme", "app.git"), home, "log", "--format=%s", "main")
	if strings.Contains(head, "agent change") {
		t.Errorf("the server's main has the agent's commit:\n%s", head)
	}
}
