package daemon

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProviderCAFile: a provider on a private CA is reached over TLS when
// its entry names the CA bundle, and refused (502, nothing answered by the
// provider) when it does not: the bundle widens trust for that upstream
// only.
func TestProviderCAFile(t *testing.T) {
	provider := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"test-model","object":"model"}]}`)
	}))
	defer provider.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: provider.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string { return map[string]string{"K": "sk-real", "T": "agent"}[k] }
	for _, tt := range []struct {
		name, caLine string
		status       int
	}{
		{"with ca_file", "\n    ca_file: " + ca, http.StatusOK},
		{"without ca_file", "", http.StatusBadGateway},
	} {
		path := filepath.Join(dir, "policy.yaml")
		body := fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
networks: {allow: [127.0.0.1/32]}
providers:
  lan:
    upstream: %s
    format: openai
    api_key_env: K
    client_token_env: T%s
budget: {cap_usd: 10, ledger: %s, unknown_model: default, prices: {default: {input: 1, output: 1}}}
`, provider.URL, tt.caLine, filepath.Join(dir, "ledger.json"))
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		a, stop := runGateway(t, path, env)
		req, _ := http.NewRequest("GET", "http://"+a.Gateway+"/lan/v1/models", nil)
		req.Header.Set("Authorization", "Bearer agent")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		stop()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.name, resp.StatusCode, strings.TrimSpace(string(b)), tt.status)
		}
	}
}
