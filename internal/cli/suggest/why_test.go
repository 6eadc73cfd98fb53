package suggest

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/shared/declog"
)

func TestNotSuggested(t *testing.T) {
	route := deny("openai", 0, vocab.ReasonNotAllowlisted, 0)
	route.Proto = vocab.ProtoGateway
	dns := deny("db", 0, vocab.ReasonNotAllowlisted, 0)
	dns.Proto = vocab.ProtoDNS
	tests := []struct {
		name  string
		entry declog.Entry
		want  Unsuggested // Count 1
	}{
		{"single label", nal("db", 0), Unsuggested{"db", whySingleLabel, 1}},
		{"single label from DNS", dns, Unsuggested{"db", whySingleLabel, 1}},
		{"gateway route", route, Unsuggested{"/openai/", whyRoute, 1}},
		{"localhost zone", nal("app.localhost", 0), Unsuggested{"app.localhost", whyLocalName, 1}},
		{"mDNS", nal("printer.local", 0), Unsuggested{"printer.local", whyLocalName, 1}},
		{"internal", nal("api.corp.internal", 0), Unsuggested{"api.corp.internal", whyLocalName, 1}},
		{"home.arpa", nal("nas.home.arpa", 0), Unsuggested{"nas.home.arpa", whyLocalName, 1}},
		{"private literal", deny("10.0.0.5", 443, vocab.ReasonIPLiteralNotAllowed, 0),
			Unsuggested{"10.0.0.5", "a private address: allow: alone cannot grant it; only a networks.allow: entry can, and only on purpose", 1}},
		{"loopback literal", deny("[::1]", 443, vocab.ReasonIPLiteralNotAllowed, 0),
			Unsuggested{"::1", "a loopback address: allow: alone cannot grant it; only a networks.allow: entry can, and only on purpose", 1}},
		{"metadata literal", deny("169.254.169.254", 80, vocab.ReasonIPLiteralNotAllowed, 0),
			Unsuggested{"169.254.169.254", whyMetadata, 1}},
		{"own address", deny("192.0.2.10", 3128, vocab.ReasonIPLiteralNotAllowed, 0), Unsuggested{"192.0.2.10", whySelf, 1}},
		{"own address, mapped", deny("::ffff:192.0.2.10", 3128, vocab.ReasonIPLiteralNotAllowed, 0), Unsuggested{"192.0.2.10", whySelf, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(t0)
			c.SetSelf([]netip.Addr{netip.MustParseAddr("192.0.2.10")})
			c.Add(tt.entry)
			rep := c.Report()
			if len(rep.Suggestions) != 0 {
				t.Errorf("suggestions: got %v, want none", hosts(rep.Suggestions))
			}
			if diff := cmp.Diff([]Unsuggested{tt.want}, rep.Unsuggested); diff != "" {
				t.Errorf("unsuggested (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIPLiteralNeverAHost(t *testing.T) {
	// Spellings of addresses reach suggest as names only when something
	// went wrong upstream; none may come out as host:.
	for _, h := range []string{"8.8.8.8", "[2606:4700::1111]", "0x7f.1", "2130706433", "127.1"} {
		c := NewCollector(t0)
		c.Add(nal(h, 0))
		for _, s := range c.Report().Suggestions {
			if s.Kind == KindHost {
				t.Errorf("%q: got host suggestion %q, want none", h, s.Host)
			}
		}
	}
}

func TestPortsOnTheExistingEntry(t *testing.T) {
	wild := `allow[3] host: "*.github.com" ports: [443] rate: {rps: 5, burst: 20}`
	e1 := deny("api.github.com", 22, vocab.ReasonPortNotAllowed, 0)
	e1.Rule = wild
	e2 := deny("raw.github.com", 8443, vocab.ReasonPortNotAllowed, 1)
	e2.Rule = wild
	e3 := deny("9.9.9.9", 853, vocab.ReasonPortNotAllowed, 2)
	e3.Rule = `allow[5] cidr: 9.9.9.0/24 ports: [443]`
	e4 := deny("odd.example", 8080, vocab.ReasonPortNotAllowed, 3)
	e4.Rule = `providers.p host: "odd.example"`
	tests := []struct {
		name    string
		entries []declog.Entry
		want    string
	}{
		{"two hosts under one wildcard entry", []declog.Entry{e1, e2}, `  # 2 denied, first 2025-03-14 12:00:00Z, last 2025-03-14 12:01:00Z
  # port 22, 8443 of api.github.com, raw.github.com: allow[3] grants it on other ports; add the port there, so that allow[3] reads:
  - host: "*.github.com"
    ports: [22, 443, 8443]
    rate: {rps: 5, burst: 20}
`},
		{"cidr entry", []declog.Entry{e3}, `  # 1 denied, first 2025-03-14 12:02:00Z, last 2025-03-14 12:02:00Z
  # port 853 of 9.9.9.9: allow[5] grants it on other ports; add the port there, so that allow[5] reads:
  - cidr: 9.9.9.0/24
    ports: [443, 853]
`},
		{"a rule it cannot read", []declog.Entry{e4}, `  # 1 denied, first 2025-03-14 12:03:00Z, last 2025-03-14 12:03:00Z
  # port 8080 of odd.example: the entry that grants it on other ports needs 8080 added to its ports:
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(t0)
			for _, e := range tt.entries {
				c.Add(e)
			}
			var b bytes.Buffer
			if err := Print(&b, c.Report()); err != nil {
				t.Fatal(err)
			}
			_, got, _ := strings.Cut(b.String(), "allow:\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Print (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintUnsuggested(t *testing.T) {
	c := NewCollector(t0)
	c.Add(nal("db", 0))
	c.Add(nal("db", 1))
	c.Add(nal("api.example.com", 1))
	var b bytes.Buffer
	Print(&b, c.Report())
	want := "# Not suggested: db (2 denied): " + whySingleLabel + ".\n"
	if !strings.Contains(b.String(), want) || !strings.Contains(b.String(), `- host: "api.example.com"`) {
		t.Errorf("Print:\n%s\nwant the line %q and the api.example.com entry", b.String(), want)
	}
}

func FuzzParseRule(f *testing.F) {
	f.Add(`allow[3] host: "*.github.com" ports: [443, 22] rate: {rps: 5, burst: 20}`)
	f.Add(`allow[5] cidr: 9.9.9.0/24 ports: [443]`)
	f.Add(`allow[1] host: "a\"\n- host: evil" ports: [443]`)
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := parseRule(s)
		if !ok {
			return
		}
		for _, part := range []string{r.target, r.rate, r.index} {
			if strings.ContainsAny(part, "\r\n#'") {
				t.Fatalf("parseRule(%q) accepted %q", s, part)
			}
		}
		if len(r.ports) == 0 {
			t.Fatalf("parseRule(%q): no ports", s)
		}
	})
}
