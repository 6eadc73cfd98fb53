package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// run executes the CLI in-process and returns stdout, stderr and the exit
// code main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else {
			code = 1
			errOut.WriteString(err.Error())
		}
	}
	return out.String(), errOut.String(), code
}

func TestCheckAcceptsExample(t *testing.T) {
	out, errOut, code := run(t, "check", "../../policy.example.yaml")
	if code != 0 {
		t.Fatalf("check example: exit %d, stderr %q", code, errOut)
	}
	if !strings.HasPrefix(out, "ok: ") || strings.Count(out, "\n") != 1 {
		t.Errorf("check example output = %q, want one line starting with ok:", out)
	}
}

func TestCheckRejectsEveryBrokenFixture(t *testing.T) {
	files, err := filepath.Glob("../../policy/testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures found: %v", err)
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "valid") {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := run(t, "check", f)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stdout %q)", code, out)
			}
			// Every problem line names the file, so a user can jump to it.
			for _, line := range strings.Split(strings.TrimSpace(errOut), "\n") {
				if !strings.HasPrefix(line, f) {
					t.Errorf("problem line %q does not start with the file name", line)
				}
			}
		})
	}
}

func TestExplain(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	body := "version: 1\nallow:\n  - host: api.github.com\n  - host: pypi.org\n    ports: [443]\n"
	if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target   string
		code     int
		wantPart []string
	}{
		{"api.github.com", 0, []string{"allow", "api.github.com:443", "allowlisted", `allow[0] host: "api.github.com"`}},
		{"evil.example", 1, []string{"deny", "evil.example:443", "not_allowlisted", `add "- host: evil.example" under allow:`}},
		{"http://pypi.org/simple/", 1, []string{"deny", "pypi.org:80", "port_not_allowed", "add 80 to ports: of allow[1]"}},
		{"169.254.169.254:80", 1, []string{"deny", "metadata_address"}},
		{"2130706433:443", 1, []string{"deny", "private_address"}},
	}
	for _, tc := range tests {
		out, errOut, code := run(t, "explain", "--config", pol, tc.target)
		if code != tc.code {
			t.Errorf("explain %s: exit %d, want %d (stderr %q)", tc.target, code, tc.code, errOut)
		}
		for _, part := range tc.wantPart {
			if !strings.Contains(out, part) {
				t.Errorf("explain %s = %q, want it to contain %q", tc.target, out, part)
			}
		}
	}
}

func TestExplainDefaultDeniesEverything(t *testing.T) {
	out, _, code := run(t, "explain", "api.github.com")
	if code != 1 || !strings.Contains(out, "not_allowlisted") {
		t.Errorf("explain on built-in default = %q exit %d, want not_allowlisted exit 1", out, code)
	}
}

func TestExplainGateway(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	body := `version: 1
providers:
  openrouter: {upstream: "https://openrouter.ai", format: openai, api_key_env: K, client_token_env: T}
  openai:
    upstream: https://api.openai.com/v1
    format: openai
    api_key_env: K2
    client_token_env: T2
    endpoints: [{method: POST, path: /v1/images/generations, per_call_usd: 0.2}]
budget: {cap_usd: 1, ledger: /tmp/unused-ledger.json}
`
	if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		code     int
		wantPart []string
	}{
		{[]string{"gateway:openrouter/api/v1/chat/completions"}, 0, []string{"allow", "POST", "-> https://openrouter.ai/api/v1/chat/completions", "chat_completions", "reserved: input estimate"}},
		{[]string{"gateway:openrouter/API/V1//models/"}, 0, []string{"GET", "-> https://openrouter.ai/api/v1/models", "billed: nothing"}},
		{[]string{"gateway:openai/images/generations"}, 0, []string{"POST", "$0.2 per call"}},
		{[]string{"gateway:openai/files"}, 1, []string{"deny", "endpoint_not_allowed", "not metered"}},
		{[]string{"--method", "DELETE", "gateway:openai/responses/resp_1"}, 1, []string{"DELETE", "endpoint_not_allowed"}},
		{[]string{"gateway:nope/v1/chat/completions"}, 1, []string{"not_allowlisted", `no provider "nope"`}},
	}
	for _, tc := range tests {
		out, errOut, code := run(t, append([]string{"explain", "--config", pol}, tc.args...)...)
		if code != tc.code {
			t.Errorf("explain %v: exit %d, want %d (stderr %q)", tc.args, code, tc.code, errOut)
		}
		for _, part := range tc.wantPart {
			if !strings.Contains(out, part) {
				t.Errorf("explain %v = %q, want it to contain %q", tc.args, out, part)
			}
		}
	}
}

func TestPrices(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	body := "version: 1\nbudget: {prices: {gpt-4o: {input: 1, output: 2, priority: 2}}, tool_fees: {web_search: 0.01}}\n"
	if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, "prices", "--config", pol)
	if code != 0 {
		t.Fatalf("prices: exit %d, stderr %q", code, errOut)
	}
	for _, re := range []string{`(?m)^gpt-4o +1 +1 +1 +2 +2 +×2 +policy$`, `(?m)^claude-haiku-4-5 +1 +0.1 +1.25 +2 +5 +refused +default$`,
		`(?m)^web_search +0.01 +policy$`, `(?m)^file_search +0.0025 +default$`, `checked \d{4}-\d{2}-\d{2}`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("prices output does not match %s:\n%s", re, out)
		}
	}
}
