package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestSuggestNeverGrantsEgressd: with --config, suggest knows egressd's
// listen addresses and says why it does not propose them.
func TestSuggestNeverGrantsEgressd(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(cfg, []byte("version: 1\nlisten:\n  proxy: 172.30.0.2:3128\n  dns: \"\"\n  gateway: \"\"\n  admin: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeLog(t, entry("172.30.0.2", vocab.Deny, vocab.ReasonIPLiteralNotAllowed), entry("db", vocab.Deny, vocab.ReasonNotAllowlisted))
	out, errOut, code := run(t, "suggest", "--file", path, "--since", "0", "--config", cfg)
	if code != 0 {
		t.Fatalf("suggest: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"# Not suggested: 172.30.0.2 (1 denied): egressd's own address",
		"# Not suggested: db (1 denied): a single-label name",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("suggest output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\nallow:\n") {
		t.Errorf("suggest proposed entries:\n%s", out)
	}
}
