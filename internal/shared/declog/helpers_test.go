package declog

import (
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// waitFor polls cond until it holds, failing t after ten seconds: for
// conditions a goroutine makes true with no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// denial is a connect denial to host from client.
func denial(client, host string) Entry {
	return Entry{
		Event: vocab.EventDecision, Client: client, Proto: vocab.ProtoConnect, Host: host, Port: 443,
		Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted,
		Hint: `add "- host: ` + host + `" under allow:`,
	}
}

// allowed is an allowed plain-HTTP request.
func allowed(client, host string) Entry {
	return Entry{
		Event: vocab.EventDecision, Client: client, Proto: vocab.ProtoHTTP, Host: host, Port: 80,
		Method: "GET", Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted,
		Rule: `allow[0] host: "` + host + `" ports: [80]`,
	}
}

// readAll reads every entry of the log at path (rotated files included).
func readAll(t *testing.T, path string) []Entry {
	t.Helper()
	var got []Entry
	if err := ReadFiles(path, func(e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatalf("ReadFiles(%s): %v", path, err)
	}
	return got
}

func countLines(s string) int { return strings.Count(s, "\n") }
