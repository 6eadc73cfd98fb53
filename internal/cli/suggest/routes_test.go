package suggest

import (
	"bytes"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/google/go-cmp/cmp"
)

func pathDenial(route, method, path, hint string, min int) declog.Entry {
	return declog.Entry{
		Time: t0.Add(time.Duration(min) * time.Minute), Event: vocab.EventDecision, Client: "10.0.0.2",
		Proto: vocab.ProtoGateway, Host: route, Method: method, Path: path, Verdict: vocab.Deny,
		Reason: vocab.ReasonPathNotAllowed, Status: 403, Hint: hint,
	}
}

func TestRouteSuggestions(t *testing.T) {
	c := NewCollector(time.Time{})
	for _, e := range []declog.Entry{
		pathDenial("github", "POST", "/repos/acme/app/issues", "", 0),
		pathDenial("github", "POST", "/repos/acme/app/issues", "", 5),
		pathDenial("github", "GET", "/repos/acme/other", "", 1),
		pathDenial("git", "GET", "/acme/app.git/info/refs", `add "- {methods: [GET], paths: ["/acme/app.git/info/refs?service=git-receive-pack"]}" under apis.git.allow:`, 2),
		pathDenial("github", "GET", "/a/*/b", "", 3),                // would read as a glob
		pathDenial("github", "GET", "/a/../b", "", 3),               // not canonical
		pathDenial("github", "get\nx", "/a", "", 3),                 // not a method
		pathDenial("git\n  evil: {}", "GET", "/a", "", 3),           // not a route name
		pathDenial("github", "GET", `/a"]}, {methods: [PUT`, "", 3), // YAML injection
	} {
		c.Add(e)
	}
	rep := c.Report()
	if rep.Skipped != 5 || rep.Considered != 9 {
		t.Errorf("skipped %d of %d, want 5 of 9", rep.Skipped, rep.Considered)
	}
	var out bytes.Buffer
	if err := Print(&out, rep); err != nil {
		t.Fatal(err)
	}
	want := `# egressd suggest: 3 entries from 9 denials and would-denies in the whole log, most frequent first.
# Nothing was changed. Review each one; paste only what you mean to grant under allow: or the route's apis.<name>.allow:.
# 5 denials had targets that are not plain names or addresses; not suggested.
apis:
  git:
    allow:
      # 1 denied (path_not_allowed), first 2025-03-14 12:02:00Z, last 2025-03-14 12:02:00Z
      # a rule fixes this path's query: append the exact ?k=v the call needs (see its hint in ` + "`egressd tail --denied`" + `)
      - {methods: [GET], paths: ["/acme/app.git/info/refs"]}
  github:
    allow:
      # 2 denied (path_not_allowed), first 2025-03-14 12:00:00Z, last 2025-03-14 12:05:00Z
      - {methods: [POST], paths: ["/repos/acme/app/issues"]}
      # 1 denied (path_not_allowed), first 2025-03-14 12:01:00Z, last 2025-03-14 12:01:00Z
      - {methods: [GET], paths: ["/repos/acme/other"]}
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("Print (-want +got):\n%s", diff)
	}
}
