//go:build hardening

package hardening

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"
)

const dnsTypeA = dns.TypeA

// dnsQuery asks egressd's DNS listener over UDP from src; nil on timeout.
func dnsQuery(t testing.TB, e *proc, src, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return dnsExchange(t, e, src, "udp", m)
}

func dnsExchange(t testing.TB, e *proc, src, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	d := &net.Dialer{Timeout: 3 * time.Second}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	} else {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c := &dns.Client{Net: network, Dialer: d, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, e.a().DNS)
	if err != nil {
		return nil
	}
	return r
}

// rawDNS sends one raw UDP packet from src and returns the reply (nil if none
// within wait).
func rawDNS(t testing.TB, e *proc, src string, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(mustAddrPort(t, e.a().DNS)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	if m == nil {
		return nil
	}
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

// randomCase applies DNS 0x20 case randomisation (draft-vixie-dnsext-dns0x20).
func randomCase(r *rand.Rand, name string) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'a' && c <= 'z' && r.IntN(2) == 0 {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// dnsUngranted are names no rule grants, some shaped like exfiltration.
var dnsUngranted = []string{
	"ungranted.test.", "evil.example.", "granted.test.evil.", "evilgranted.test.",
	"xn--grnted-4nf.test.", "x.granted.test.", "a.b.c.d.e.f.exfil.example.",
	"ZGF0YS1leGZpbHRyYXRpb24.tunnel.example.", "localhost.", "127.0.0.1.", "1.0.0.127.in-addr.arpa.",
	strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) + ".",
}

// TestDNSUngranted: names no rule grants get NXDOMAIN, in whatever case
// the client randomised them (0x20), with the question echoed as sent;
// the upstream is never asked; every query is logged. A granted name in
// random case is answered.
func TestDNSUngranted(t *testing.T) {
	w := startWall(t)
	rng := rand.New(rand.NewPCG(9, 9))
	for _, name := range dnsUngranted {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT} {
			q := randomCase(rng, name)
			src := newClientIP()
			m := dnsQuery(t, w.e, src, q, qt)
			if m == nil || m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
				t.Errorf("%s %s: got %v, want NXDOMAIN", dns.TypeToString[qt], q, rcodeOf(m))
				continue
			}
			if m.Question[0].Name != q {
				t.Errorf("%s: question came back as %s, want the client's case", q, m.Question[0].Name)
			}
			w.e.log.wait(t, logWait, match{Proto: "dns", Client: src, Denied: true})
		}
	}
	for _, name := range dnsUngranted {
		if n := w.dns.up.Count(name, dns.TypeA) + w.dns.up.Count(name, dns.TypeAAAA) + w.dns.up.Count(name, dns.TypeTXT); n != 0 {
			t.Errorf("upstream DNS was asked about ungranted %s %d times, want 0", name, n)
		}
	}
	q := randomCase(rng, "granted.test.")
	m := dnsQuery(t, w.e, newClientIP(), q, dns.TypeA)
	if got := answerAddrs(m); len(got) != 1 || got[0] != upstreamIP {
		t.Fatalf("A %s: got %v (%s), want [%s]", q, got, rcodeOf(m), upstreamIP)
	}
	if m.Question[0].Name != q {
		t.Errorf("question came back as %s, want %s", m.Question[0].Name, q)
	}
	w.e.alive(t)
}

// TestDNSTunnelTypes: types that carry data (tunnelling) or enumerate
// zones are refused for granted names without asking upstream, and logged.
func TestDNSTunnelTypes(t *testing.T) {
	w := startWall(t)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, qt := range []uint16{dns.TypeTXT, dns.TypeNULL, dns.TypeANY, dns.TypeMX, dns.TypeSRV, dns.TypeNS,
		dns.TypePTR, dns.TypeCAA, dns.TypeAXFR, dns.TypeIXFR, 65280} {
		src := newClientIP()
		m := dnsQuery(t, w.e, src, randomCase(rng, "granted.test."), qt)
		if m == nil || m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Errorf("%s granted.test: got %s, want REFUSED", dns.Type(qt), rcodeOf(m))
			continue
		}
		w.e.log.wait(t, logWait, match{Proto: "dns", Client: src, Reason: vocab.ReasonQTypeNotAllowed, Denied: true})
		if n := w.dns.up.Count("granted.test.", qt); n != 0 {
			t.Errorf("upstream was asked %s granted.test %d times, want 0", dns.Type(qt), n)
		}
	}
	w.e.alive(t)
}

// TestDNSPrivateAnswers: granted names whose answers point inside the wall
// get no address (each logged with the address's reason); a mixed answer
// keeps only its public half.
func TestDNSPrivateAnswers(t *testing.T) {
	w := startWall(t)
	for _, tc := range []struct {
		name string
		qt   uint16
		want vocab.Reason
	}{
		{"loop.test.", dns.TypeA, rSelf}, // 127.0.0.1 is egressd's own address
		{"meta.test.", dns.TypeA, rMetadata},
		{"ten.test.", dns.TypeA, rPrivate},
		{"trap.test.", dns.TypeA, rPrivate},
		{"mapped.test.", dns.TypeAAAA, rSelf}, // ::ffff:127.0.0.1
		{"nat64.test.", dns.TypeAAAA, rMetadata},
		{"sixtofour.test.", dns.TypeAAAA, rMetadata},
		{"teredo.test.", dns.TypeAAAA, rMetadata},
		{"v6loop.test.", dns.TypeAAAA, rPrivate},
		{"cname.test.", dns.TypeA, rSelf},
	} {
		src := newClientIP()
		m := dnsQuery(t, w.e, src, tc.name, tc.qt)
		if got := answerAddrs(m); m == nil || len(got) != 0 {
			t.Errorf("%s %s: got %v (%s), want no address", dns.Type(tc.qt), tc.name, got, rcodeOf(m))
			continue
		}
		w.e.log.wait(t, logWait, match{Proto: "dns", Client: src, Reason: tc.want, Denied: true})
	}
	if m := dnsQuery(t, w.e, newClientIP(), "mixed.test.", dns.TypeA); !equalStrings(answerAddrs(m), []string{upstreamIP}) {
		t.Errorf("A mixed.test: got %v, want only %s (the private half stripped)", answerAddrs(m), upstreamIP)
	}
	w.e.alive(t)
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func rcodeOf(m *dns.Msg) string {
	if m == nil {
		return "no reply"
	}
	return dns.RcodeToString[m.Rcode]
}

// TestDNSOversized: names and labels over the protocol limits (which
// only a hand-built packet can carry) are refused, never forwarded, and
// logged.
func TestDNSOversized(t *testing.T) {
	w := startWall(t)
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"64-byte label", rawQuery(1, dns.TypeA, strings.Repeat("a", 64), "granted", "test")},
		{"256-byte name", rawQuery(2, dns.TypeA, strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("c", 63), strings.Repeat("d", 62), "test")},
		{"label runs past the packet", append(rawHeader(3, 1), 63, 'a', 'b')},
	} {
		src := newClientIP()
		resp := rawDNS(t, w.e, src, tc.pkt, time.Second) // egressd may drop it
		if resp != nil {
			m := new(dns.Msg)
			if err := m.Unpack(resp); err == nil && len(m.Answer) != 0 {
				t.Errorf("%s: got an answer %v", tc.name, m.Answer)
			}
		}
		if w.e.log.waitOrNil(2*time.Second, match{Proto: "dns", Client: src, Denied: true}) == nil {
			t.Errorf("%s: got reply %x; the malformed query is not in the decision log", tc.name, resp)
		}
	}
	if n := w.dns.up.Total(); n != 0 {
		t.Errorf("upstream DNS saw %d queries, want 0", n)
	}
	w.e.alive(t)
}

// TestDNSGarbage: seeded random packets, truncated ones, looping
// compression pointers, wrong counts, answers, other opcodes and classes,
// over UDP and TCP, never crash egressd and never reach the upstream.
func TestDNSGarbage(t *testing.T) {
	w := startWall(t)
	src := newClientIP()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(mustAddrPort(t, w.e.a().DNS)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range garbagePackets() {
		c.Write(p)
	}
	// TCP: garbage after a length prefix, and a prefix with nothing after.
	for _, p := range [][]byte{{0xff, 0xff}, {0, 3, 1, 2, 3}, append([]byte{0, 12}, rawHeader(14, 1)...)} {
		tc := dialFrom(t, src, w.e.a().DNS)
		tc.Write(p)
		tc.Close()
	}
	w.e.alive(t)
	if n := w.dns.up.Total(); n != 0 {
		t.Errorf("upstream DNS saw %d queries from garbage, want 0", n)
	}
	if m := dnsQuery(t, w.e, newClientIP(), "granted.test.", dns.TypeA); !equalStrings(answerAddrs(m), []string{upstreamIP}) {
		t.Errorf("after the garbage, A granted.test: got %v (%s), want [%s]", answerAddrs(m), rcodeOf(m), upstreamIP)
	}
}

// garbagePackets are hand-made malformed queries and 2,000 seeded random
// packets, half of them with a header that passes the first checks.
func garbagePackets() [][]byte {
	pkts := [][]byte{
		{}, {0}, rawHeader(4, 0), rawHeader(5, 1), rawHeader(6, 2),
		append(rawHeader(7, 1), 0xc0, 12, 0, 1, 0, 1),                // pointer to itself
		append(rawHeader(8, 1), 1, 'a', 0xc0, 12, 0, 1, 0, 1),        // loop through a label
		withFlags(rawQuery(9, dns.TypeA, "granted", "test"), 0x8000), // an answer
		withFlags(rawQuery(10, dns.TypeA, "granted", "test"), 5<<11), // UPDATE
		withFlags(rawQuery(11, dns.TypeA, "granted", "test"), 4<<11), // NOTIFY
		withClass(rawQuery(12, dns.TypeTXT, "version", "bind"), dns.ClassCHAOS),
		withClass(rawQuery(13, dns.TypeA, "granted", "test"), dns.ClassANY),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		p := make([]byte, rng.IntN(600))
		for i := range p {
			p[i] = byte(rng.UintN(256))
		}
		if len(p) > 5 && rng.IntN(2) == 0 {
			p[4], p[5] = 0, 1 // one question: gets past the header check
			p[2] &^= 0x80     // not an answer
		}
		pkts = append(pkts, p)
	}
	return pkts
}

// rawHeader is a 12-byte query header with qd questions.
func rawHeader(id uint16, qd uint16) []byte {
	h := binary.BigEndian.AppendUint16(nil, id)
	h = append(h, 1, 0) // RD
	h = binary.BigEndian.AppendUint16(h, qd)
	return append(h, 0, 0, 0, 0, 0, 0)
}

// rawQuery builds a query from labels by hand, so limits can be broken.
func rawQuery(id, qtype uint16, labels ...string) []byte {
	p := rawHeader(id, 1)
	for _, l := range labels {
		p = append(p, byte(len(l)))
		p = append(p, l...)
	}
	p = append(p, 0)
	p = binary.BigEndian.AppendUint16(p, qtype)
	return binary.BigEndian.AppendUint16(p, dns.ClassINET)
}

func withFlags(p []byte, set uint16) []byte {
	f := binary.BigEndian.Uint16(p[2:]) | set
	binary.BigEndian.PutUint16(p[2:], f)
	return p
}

func withClass(p []byte, class uint16) []byte {
	binary.BigEndian.PutUint16(p[len(p)-2:], class)
	return p
}
