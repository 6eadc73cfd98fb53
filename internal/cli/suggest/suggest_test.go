package suggest

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

// deny is a denial of host:port at t0+min minutes.
func deny(host string, port uint16, reason vocab.Reason, min int) declog.Entry {
	return declog.Entry{
		Time: t0.Add(time.Duration(min) * time.Minute), Event: vocab.EventDecision, Client: "10.0.0.2",
		Proto: vocab.ProtoConnect, Host: host, Port: port, Verdict: vocab.Deny, Reason: reason,
	}
}

func nal(host string, min int) declog.Entry {
	return deny(host, 443, vocab.ReasonNotAllowlisted, min)
}

// hosts is what each suggestion proposes, in order.
func hosts(ss []Suggestion) []string {
	var out []string
	for _, s := range ss {
		v := s.Host + s.CIDR
		if len(s.Ports) > 0 {
			v += fmt.Sprint(s.Ports)
		}
		out = append(out, fmt.Sprintf("%s x%d", v, s.Count))
	}
	return out
}

func TestGrouping(t *testing.T) {
	tests := []struct {
		name    string
		entries []declog.Entry
		want    []string
	}{
		{"two subdomains stay exact",
			[]declog.Entry{nal("a.example.com", 0), nal("b.example.com", 1), nal("b.example.com", 2)},
			[]string{"b.example.com x2", "a.example.com x1"}},
		{"three subdomains group",
			[]declog.Entry{nal("a.example.com", 0), nal("b.example.com", 1), nal("c.example.com", 2)},
			[]string{"*.example.com x3"}},
		{"the parent itself stays exact",
			[]declog.Entry{nal("example.com", 0), nal("a.example.com", 0), nal("b.example.com", 1), nal("c.example.com", 2)},
			[]string{"*.example.com x3", "example.com x1"}},
		{"deepest common parent",
			[]declog.Entry{nal("a.cdn.example.com", 0), nal("b.cdn.example.com", 1), nal("c.cdn.example.com", 2)},
			[]string{"*.cdn.example.com x3"}},
		{"a seen base moves the wildcard up",
			[]declog.Entry{nal("cdn.example.com", 0), nal("a.cdn.example.com", 1), nal("b.cdn.example.com", 2)},
			[]string{"*.example.com x3"}},
		{"never *.co.uk",
			[]declog.Entry{nal("a.co.uk", 0), nal("b.co.uk", 1), nal("c.co.uk", 2)},
			[]string{"c.co.uk x1", "b.co.uk x1", "a.co.uk x1"}},
		{"never *.com",
			[]declog.Entry{nal("one.com", 0), nal("two.com", 1), nal("three.com", 2)},
			[]string{"three.com x1", "two.com x1", "one.com x1"}},
		{"private suffix owners are separate",
			[]declog.Entry{nal("alice.github.io", 0), nal("bob.github.io", 1), nal("carol.github.io", 2)},
			[]string{"carol.github.io x1", "bob.github.io x1", "alice.github.io x1"}},
		{"under a co.uk registrable domain",
			[]declog.Entry{nal("a.shop.co.uk", 0), nal("b.shop.co.uk", 1), nal("c.shop.co.uk", 2)},
			[]string{"*.shop.co.uk x3"}},
		{"ports other than 443 are listed",
			[]declog.Entry{nal("git.example.org", 0), deny("git.example.org", 22, vocab.ReasonNotAllowlisted, 1)},
			[]string{"git.example.org[22 443] x2"}},
		{"dns asks add no port",
			[]declog.Entry{{Time: t0, Event: vocab.EventDecision, Proto: vocab.ProtoDNS, Host: "models.dev",
				Verdict: vocab.Report, Reason: vocab.ReasonNotAllowlisted}},
			[]string{"models.dev x1"}},
		{"port_not_allowed proposes the ports, never grouped",
			[]declog.Entry{deny("a.example.net", 8443, vocab.ReasonPortNotAllowed, 0), deny("b.example.net", 8443, vocab.ReasonPortNotAllowed, 0),
				deny("c.example.net", 8443, vocab.ReasonPortNotAllowed, 0), deny("c.example.net", 8443, vocab.ReasonPortNotAllowed, 1)},
			[]string{"c.example.net[8443] x2", "a.example.net[8443] x1", "b.example.net[8443] x1"}},
		{"ip literals become /32 and /128",
			[]declog.Entry{deny("9.9.9.9", 443, vocab.ReasonIPLiteralNotAllowed, 0), deny("[2606:4700::1111]", 443, vocab.ReasonIPLiteralNotAllowed, 1),
				deny("::ffff:1.1.1.1", 443, vocab.ReasonIPLiteralNotAllowed, 2)},
			[]string{"1.1.1.1/32 x1", "2606:4700::1111/128 x1", "9.9.9.9/32 x1"}},
		{"ungrantable reasons are not suggested",
			[]declog.Entry{deny("metadata.example", 80, vocab.ReasonMetadataAddress, 0), deny("x.example", 443, vocab.ReasonPrivateAddress, 0),
				deny("y.example", 443, vocab.ReasonSelfAddress, 0), deny("z.example", 443, vocab.ReasonRateLimited, 0)},
			nil},
		{"allows are not suggested",
			[]declog.Entry{{Time: t0, Event: vocab.EventDecision, Proto: vocab.ProtoConnect, Host: "pypi.org", Port: 443,
				Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted}},
			nil},
		{"hostile or odd targets are not suggested",
			[]declog.Entry{nal("evil.com\"\n- host: \"*", 0), nal("0x7f.1", 0), nal("2130706433", 0), nal("-bad.example", 0),
				nal("a..example", 0), nal("ex ample.com", 0), deny("0177.0.0.1", 443, vocab.ReasonIPLiteralNotAllowed, 0)},
			nil},
		{"case and trailing dot are one name",
			[]declog.Entry{nal("PyPI.org.", 0), nal("pypi.org", 1)},
			[]string{"pypi.org x2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, hosts(Suggest(tc.entries, time.Time{}))); diff != "" {
				t.Errorf("Suggest (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCountsAndTimes(t *testing.T) {
	summary := nal("api.example.org", 30)
	summary.Event, summary.Count = vocab.EventSummary, 41
	would := nal("api.example.org", 5)
	would.Verdict = vocab.Report
	entries := []declog.Entry{
		nal("old.example.org", -120), // before since
		nal("api.example.org", 10),
		would,
		summary,
		nal("once.example.net", 20),
	}
	got := Suggest(entries, t0)
	want := []Suggestion{
		{Kind: KindHost, Host: "api.example.org", Count: 43, Denied: 42, WouldDeny: 1,
			FirstSeen: t0.Add(5 * time.Minute), LastSeen: t0.Add(30 * time.Minute)},
		{Kind: KindHost, Host: "once.example.net", Count: 1, Denied: 1,
			FirstSeen: t0.Add(20 * time.Minute), LastSeen: t0.Add(20 * time.Minute)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Suggest (-want +got):\n%s", diff)
	}
}

func TestWildcardAggregates(t *testing.T) {
	got := Suggest([]declog.Entry{
		nal("a.example.com", 3), nal("b.example.com", 1), deny("c.example.com", 8443, vocab.ReasonNotAllowlisted, 7), nal("c.example.com", 2),
	}, time.Time{})
	want := []Suggestion{{
		Kind: KindHost, Host: "*.example.com", Ports: []uint16{443, 8443}, Count: 4, Denied: 4,
		FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(7 * time.Minute),
		Names: []string{"a.example.com", "b.example.com", "c.example.com"},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Suggest (-want +got):\n%s", diff)
	}
}

func TestPrint(t *testing.T) {
	c := NewCollector(t0)
	for i := range 7 {
		c.Add(nal(fmt.Sprintf("n%d.cdn.example.com", i), i))
	}
	pna := deny("git.example.org", 22, vocab.ReasonPortNotAllowed, 1)
	pna.Rule = `allow[2] host: "git.example.org" ports: [443]`
	c.Add(pna)
	c.Add(deny("9.9.9.9", 443, vocab.ReasonIPLiteralNotAllowed, 2))
	c.Add(deny("169.254.169.254", 80, vocab.ReasonMetadataAddress, 2))
	c.Add(nal("bad\x1bname", 2))
	var b bytes.Buffer
	if err := Print(&b, c.Report()); err != nil {
		t.Fatal(err)
	}
	want := `# egressd suggest: 3 entries from 10 denials and would-denies since 2025-03-14T12:00:00Z, most frequent first.
# Nothing was changed. Review each one; paste only what you mean to grant under allow:.
# 1 denials had targets that are not plain names or addresses; not suggested.
# Not grantable with allow: (see ` + "`egressd tail --denied`" + `): 1 metadata_address.
allow:
  # 7 denied, first 2025-03-14 12:00:00Z, last 2025-03-14 12:06:00Z
  # 7 names: n0.cdn.example.com, n1.cdn.example.com, n2.cdn.example.com, n3.cdn.example.com, n4.cdn.example.com and 2 more
  - host: "*.cdn.example.com"
  # 1 denied, first 2025-03-14 12:02:00Z, last 2025-03-14 12:02:00Z
  # IP-literal target: check what it is before granting
  - cidr: "9.9.9.9/32"
  # 1 denied, first 2025-03-14 12:01:00Z, last 2025-03-14 12:01:00Z
  # port 22 of git.example.org: allow[2] grants it on other ports; add the port there, so that allow[2] reads:
  - host: "git.example.org"
    ports: [22, 443]
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("Print (-want +got):\n%s", diff)
	}
	b.Reset()
	Print(&b, NewCollector(time.Time{}).Report())
	if got, want := b.String(), "# egressd suggest: no grantable denials in the whole log.\n"; got != want {
		t.Errorf("empty report: got %q, want %q", got, want)
	}
}

// TestFromRotatedLog runs suggest over a real, rotated decision log written
// by declog, throttling included: folded denials must still be counted.
func TestFromRotatedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := declog.New(declog.Options{File: path, Stdout: io.Discard, MaxBytes: 2048, Keep: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		e := nal(fmt.Sprintf("s%d.files.example.com", i%4), 0)
		e.Time = time.Time{} // stamped by the logger
		l.Record(e)
		l.Record(declog.Entry{Client: "10.0.0.2", Proto: vocab.ProtoConnect, Host: fmt.Sprintf("ok%d.example", i),
			Port: 443, Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if files, _ := declog.Files(path); len(files) < 3 {
		t.Fatalf("want a rotated log, got %v", files)
	}
	c := NewCollector(time.Time{})
	if err := declog.ReadFiles(path, func(e declog.Entry) error { c.Add(e); return nil }); err != nil {
		t.Fatal(err)
	}
	got := c.Report().Suggestions
	if len(got) != 1 || got[0].Host != "*.files.example.com" || got[0].Count != 60 {
		t.Errorf("got %s, want [*.files.example.com x60]", strings.Join(hosts(got), ", "))
	}
}

func TestCollectorBounded(t *testing.T) {
	c := NewCollector(time.Time{})
	c.maxNames = 10
	for i := range 25 {
		c.Add(nal(fmt.Sprintf("r%d.example.com", i), 0))
	}
	r := c.Report()
	if len(r.Suggestions) != 1 || r.Suggestions[0].Count != 10 || r.Skipped != 15 {
		t.Errorf("got %v, skipped %d; want one wildcard x10 and 15 skipped", hosts(r.Suggestions), r.Skipped)
	}
}

func FuzzHostName(f *testing.F) {
	for _, s := range []string{"pypi.org", "A.B.", "0x7f.1", "a..b", "xn--bcher-kva.example", "\"\n- host: *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n, ok := hostName(h)
		if !ok {
			return
		}
		// Whatever passes must be printable without quoting surprises and
		// be a fixed point.
		for i := 0; i < len(n); i++ {
			if c := n[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' || c == '*' {
				t.Fatalf("hostName(%q) = %q: unsafe byte %q", h, n, c)
			}
		}
		if again, ok := hostName(n); !ok || again != n {
			t.Fatalf("hostName(%q) = %q, but hostName(%q) = %q, %v", h, n, n, again, ok)
		}
		Suggest([]declog.Entry{nal(h, 0), nal("a."+h, 0), nal("b."+h, 0), nal("c."+h, 0)}, time.Time{})
	})
}

func TestFoldedSummaryHostsAreSuggested(t *testing.T) {
	c := NewCollector(time.Time{})
	c.Add(declog.Entry{Time: time.Unix(100, 0), Event: vocab.EventSummary, Proto: vocab.ProtoConnect,
		Host: "*", Hosts: []string{"exfil.example", "pypi.org"}, Count: 500,
		Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted})
	rep := c.Report()
	var got []string
	for _, s := range rep.Suggestions {
		got = append(got, s.Host)
	}
	if !slices.Contains(got, "exfil.example") || !slices.Contains(got, "pypi.org") {
		t.Errorf("suggestions %v, want the sampled hosts exfil.example and pypi.org", got)
	}
	if rep.Considered != 500 || rep.Skipped != 498 {
		t.Errorf("considered %d skipped %d, want 500 and 498", rep.Considered, rep.Skipped)
	}
}
