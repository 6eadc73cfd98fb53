package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// writeLog writes entries through the real decision-log writer.
func writeLog(t *testing.T, entries ...declog.Entry) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := declog.New(declog.Options{File: path, Stdout: io.Discard, ThrottleWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func entry(host string, v vocab.Verdict, r vocab.Reason) declog.Entry {
	return declog.Entry{Time: time.Now(), Event: vocab.EventDecision, Client: "172.30.0.3", Proto: vocab.ProtoConnect,
		Host: host, Port: 443, Method: "CONNECT", Verdict: v, Reason: r}
}

func TestTailDenied(t *testing.T) {
	path := writeLog(t,
		entry("api.github.com", vocab.Allow, vocab.ReasonAllowlisted),
		entry("evil.example", vocab.Deny, vocab.ReasonNotAllowlisted),
		entry("learn.example", vocab.Report, vocab.ReasonNotAllowlisted),
	)
	out, errOut, code := run(t, "tail", "--file", path, "--denied")
	if code != 0 {
		t.Fatalf("tail: exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "api.github.com") {
		t.Errorf("tail --denied shows an allowed entry:\n%s", out)
	}
	for _, want := range []string{"evil.example:443", "not_allowlisted", "learn.example:443"} {
		if !strings.Contains(out, want) {
			t.Errorf("tail --denied output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = run(t, "tail", "--file", path, "--json")
	if got := strings.Count(out, "\n"); got != 3 {
		t.Errorf("tail --json printed %d lines, want 3:\n%s", got, out)
	}
}

func TestSuggestFromLog(t *testing.T) {
	var es []declog.Entry
	for _, h := range []string{"a.cdn.example", "b.cdn.example", "c.cdn.example", "pypi.org", "pypi.org"} {
		es = append(es, entry(h, vocab.Deny, vocab.ReasonNotAllowlisted))
	}
	es = append(es, entry("169.254.169.254", vocab.Deny, vocab.ReasonMetadataAddress))
	path := writeLog(t, es...)
	out, errOut, code := run(t, "suggest", "--file", path, "--since", "0")
	if code != 0 {
		t.Fatalf("suggest: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`"*.cdn.example"`, `"pypi.org"`} {
		if !strings.Contains(out, want) {
			t.Errorf("suggest output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "host: \"169.254.169.254\"") || strings.Contains(out, "cidr: \"169.254.169.254") {
		t.Errorf("suggest proposes granting a metadata address:\n%s", out)
	}
}

func TestHostwallPrintsRules(t *testing.T) {
	out, _, code := run(t, "hostwall", "--bridge", "hermes0")
	if code != 0 || !strings.Contains(out, "-i hermes0") || !strings.Contains(out, "DROP") {
		t.Errorf("hostwall: exit %d, output %q; want iptables DROP rules for hermes0", code, out)
	}
	if _, _, code := run(t, "hostwall", "--bridge", "bad;name"); code == 0 {
		t.Error("hostwall accepted an invalid bridge name")
	}
}

func TestLedgerMigrateArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wrong direction", []string{"ledger", "migrate", "--from", "postgres", "--to", "file", "--config", "x.yaml"}, "only --from file --to postgres"},
		{"no config", []string{"ledger", "migrate", "--from", "file", "--to", "postgres"}, "--config is required"},
		{"file store", []string{"ledger", "migrate", "--from", "file", "--to", "postgres", "--config", "../../policy.example.yaml"}, "budget.store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := run(t, tt.args...)
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d, stderr %q; want failure mentioning %q", code, errOut, tt.want)
			}
		})
	}
}
