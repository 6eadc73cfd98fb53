package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// atonPart is the shape of one inet_aton number: hex, octal or decimal.
var atonPart = regexp.MustCompile(`^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$`)

// referenceInetAton is an independent, slow inet_aton used as the oracle:
// whatever it accepts must come back from NormalizeHost as that address.
func referenceInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		if !atonPart.MatchString(p) {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(p, 0, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	n := len(vals)
	for _, v := range vals[:n-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
	}
	if vals[n-1] >= 1<<(8*(5-n)) {
		return netip.Addr{}, false
	}
	var v uint64
	for i, x := range vals[:n-1] {
		v |= x << (24 - 8*i)
	}
	v |= vals[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"example.com", "EXAMPLE.com.", "bücher.example", "127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433",
		"[::1]", "::ffff:127.0.0.1", "fe80::1%eth0", "a..b", "%31.0.0.1", "xn--bcher-kva.example", "1.2.3.4.",
		"１２７．０．０．１", "example.0x1", "0x", "08", "4294967296", "*.example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, ip, err := NormalizeHost(s)
		if want, ok := referenceInetAton(strings.TrimSuffix(s, ".")); ok && (err != nil || ip != want) {
			t.Fatalf("NormalizeHost(%q) = %q, %v, %v; inet_aton reads it as %v", s, name, ip, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrBadHost) || name != "" || ip.IsValid() {
				t.Fatalf("NormalizeHost(%q) = %q, %v, %v: an error must come alone and wrap ErrBadHost", s, name, ip, err)
			}
			return
		}
		if (name == "") == !ip.IsValid() {
			t.Fatalf("NormalizeHost(%q) = %q, %v: want exactly one of name and IP", s, name, ip)
		}
		if ip.IsValid() {
			if ip.Is4In6() || ip.Zone() != "" {
				t.Fatalf("NormalizeHost(%q) IP %v is mapped or zoned", s, ip)
			}
			return
		}
		// A name is canonical: normalising it again changes nothing, and
		// it is never something inet_aton would read as an address.
		again, ip2, err := NormalizeHost(name)
		if err != nil || again != name || ip2.IsValid() {
			t.Fatalf("NormalizeHost(%q) = %q, but NormalizeHost(%q) = %q, %v, %v", s, name, name, again, ip2, err)
		}
		if _, ok := referenceInetAton(name); ok || len(name) > 253 || strings.HasSuffix(name, ".") {
			t.Fatalf("NormalizeHost(%q) = %q: not a canonical name", s, name)
		}
		if n := strings.LastIndexByte(name, '.'); numericLabel(name[n+1:]) {
			t.Fatalf("NormalizeHost(%q) = %q: numeric last label returned as a name", s, name)
		}
	})
}

// fuzzPolicy is a fixed policy for FuzzMatch; built once per process.
const fuzzPolicyYAML = `version: 1
allow:
  - host: api.example.com
  - host: "*.example.com"
    ports: [443, 8443]
  - host: "*.a.b.example.org"
  - host: "*.co"
    ports: [80]
  - cidr: 149.154.160.0/20
  - cidr: "2001:67c:4e8::/48"
    ports: [443, 80]
`

func FuzzMatch(f *testing.F) {
	p := mustLoad(f, fuzzPolicyYAML)
	for _, s := range []string{"a.example.com", "example.com", "evilexample.com", "example.com.evil.net", "x.a.b.example.org",
		"A.EXAMPLE.COM.", "149.154.167.220", "[2001:67c:4e8::1]", "b.example.org", "q.co", "co"} {
		f.Add(s, uint16(443), uint8(vocab.ProtoConnect), "example.org")
	}
	f.Fuzz(func(t *testing.T, host string, port uint16, proto uint8, suffix string) {
		req := Request{Host: host, Port: port, Proto: vocab.Proto(proto % 4)}
		d := p.Decide(req)
		if d2 := p.Decide(req); d2 != d {
			t.Fatalf("Decide(%+v) not deterministic: %+v then %+v", req, d, d2)
		}
		name, ip, err := NormalizeHost(host)
		checkMatchInvariants(t, p, req, d, name, ip, err)
		// The same question with the canonical spelling gets the same answer.
		if err == nil && name != "" {
			canon := req
			canon.Host = name
			if dc := p.Decide(canon); dc != d {
				t.Fatalf("Decide(%q) = %+v but Decide(%q) = %+v", host, d, name, dc)
			}
		}
		// A wildcard built from the fuzzed suffix matches only strict subdomains.
		sname, sip, serr := NormalizeHost(suffix)
		if serr != nil || sip.IsValid() || err != nil || name == "" {
			return
		}
		r := &Rule{Host: "*." + sname, Ports: []uint16{443}}
		wp := &Policy{}
		wp.addWild(sname, r)
		got := wp.Decide(Request{Host: host, Port: 443, Proto: vocab.ProtoConnect}).Verdict == vocab.Allow
		want := strings.HasSuffix(name, "."+sname)
		if got != want {
			t.Fatalf("*.%s vs %q (%q): allowed %v, want %v", sname, host, name, got, want)
		}
	})
}

func checkMatchInvariants(t *testing.T, p *Policy, req Request, d Decision, name string, ip netip.Addr, err error) {
	t.Helper()
	if err != nil && d.Verdict != vocab.Deny {
		t.Fatalf("bad host %q was %s", req.Host, d.Verdict)
	}
	if d.Verdict != vocab.Allow {
		return
	}
	r := d.Rule
	if r == nil {
		t.Fatalf("Decide(%+v) allowed without a rule", req)
	}
	if req.Proto != vocab.ProtoDNS && !r.grants(req.Port) && r.Provider == "" {
		t.Fatalf("Decide(%+v) allowed by %s, which does not grant the port", req, r)
	}
	switch {
	case ip.IsValid():
		if !r.Prefix.Contains(ip) || p.CheckAddr(ip).Verdict != vocab.Allow {
			t.Fatalf("Decide(%+v) allowed %v by %s", req, ip, r)
		}
	case strings.HasPrefix(r.Host, "*."):
		if suffix := r.Host[1:]; !strings.HasSuffix(name, suffix) || len(name) <= len(suffix) {
			t.Fatalf("Decide(%+v): %q allowed by %s", req, name, r)
		}
	default:
		if name != r.Host {
			t.Fatalf("Decide(%+v): %q allowed by %s", req, name, r)
		}
	}
}

func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	seeds = append(seeds, examplePath)
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("version: 1\nallow: &a [{host: a.example}]\nnetworks: {allow: *a}\n"))
	f.Add([]byte("version: 1\nlimits: 5\n"))
	f.Add([]byte("version: 1\n? [a]\n: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := LoadBytes(data, "fuzz.yaml")
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("LoadBytes error %v with policy %v; want nil policy and ErrInvalid", err, p)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("LoadBytes error %T %v is not a non-empty Errors", err, err)
			}
			return
		}
		if p.Config().Version != 1 || p.Hash() == "" {
			t.Fatalf("loaded policy has version %d hash %q", p.Config().Version, p.Hash())
		}
		for _, r := range p.Rules() {
			d := p.Decide(Request{Host: strings.TrimPrefix(r.Host, "*."), Port: 443, Proto: vocab.ProtoDNS})
			if r.Host != "" && !strings.HasPrefix(r.Host, "*.") && d.Verdict == vocab.Deny && d.Reason != vocab.ReasonUseGateway {
				t.Fatalf("rule %s does not answer DNS for its own host: %s %s", &r, d.Verdict, d.Reason)
			}
		}
	})
}
