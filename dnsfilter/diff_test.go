package dnsfilter

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// The differential tests: the fast path against the full path it
// replaces, on the same table of queries.

type diffCase struct {
	name   string
	pkt    []byte
	prime  []byte // sent first through the full path, to fill the reply cache
	inline bool   // the fast path must answer without a goroutine
	reject bool   // rejected on the header, before ServeDNS: compared on sockets only
}

func diffCases(tb testing.TB) []diffCase {
	p := func(m *dns.Msg) []byte { return pack(tb, m) }
	cookie := &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}
	padding := &dns.EDNS0_PADDING{Padding: make([]byte, 12)}
	subnet := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(198, 51, 100, 0)}
	oddBits := func(m *dns.Msg) {
		m.AuthenticatedData, m.Zero, m.Authoritative, m.RecursionAvailable = true, true, true, true
		m.Rcode = dns.RcodeRefused
	}
	twoQ := q("granted.example.", dns.TypeA)
	twoQ.Question = append(twoQ.Question, dns.Question{Name: "evil.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	headerOnly := p(q("granted.example.", dns.TypeA))[:headerLen]
	garbage := []byte("not dns at all, but long enough to have a header")
	response := q("granted.example.", dns.TypeA, func(m *dns.Msg) { m.Response = true })
	nonASCII := p(q("cafe.wild.example.", dns.TypeA))
	nonASCII[headerLen+4] = 0xC3
	return []diffCase{
		{name: "granted", pkt: p(q("granted.example.", dns.TypeA)), prime: p(q("GRANTED.example.", dns.TypeA, withID(1))), inline: true},
		{name: "0x20 case, RD off, CD on", pkt: p(q("gRaNtEd.ExAmPlE.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired, m.CheckingDisabled = false, true })),
			prime: p(q("granted.example.", dns.TypeA)), inline: true},
		{name: "odd header bits", pkt: p(q("granted.example.", dns.TypeA, oddBits)), prime: p(q("granted.example.", dns.TypeA)), inline: true},
		{name: "edns", pkt: p(q("granted.example.", dns.TypeA, withEDNS(1232, false))), prime: p(q("granted.example.", dns.TypeA, withEDNS(4096, true))), inline: true},
		{name: "edns 100, cookie", pkt: p(q("granted.example.", dns.TypeA, withEDNS(100, true, cookie))), prime: p(q("granted.example.", dns.TypeA, withEDNS(1232, false))), inline: true},
		{name: "edns cookie and padding", pkt: p(q("granted.example.", dns.TypeA, withEDNS(1232, false, cookie, padding))), prime: p(q("granted.example.", dns.TypeA, withEDNS(1232, false))), inline: true},
		{name: "AAAA", pkt: p(q("granted.example.", dns.TypeAAAA)), prime: p(q("granted.example.", dns.TypeAAAA)), inline: true},
		{name: "filtered answer", pkt: p(q("Mixed.Wild.Example.", dns.TypeA)), prime: p(q("mixed.wild.example.", dns.TypeA)), inline: true},
		{name: "every address private", pkt: p(q("private.wild.example.", dns.TypeA)), prime: p(q("private.wild.example.", dns.TypeA)), inline: true},
		{name: "cname chain", pkt: p(q("cname.wild.example.", dns.TypeA)), prime: p(q("cname.wild.example.", dns.TypeA)), inline: true},
		{name: "https hints", pkt: p(q("svc.wild.example.", dns.TypeHTTPS)), prime: p(q("svc.wild.example.", dns.TypeHTTPS)), inline: true},
		{name: "upstream nxdomain", pkt: p(q("nx.wild.example.", dns.TypeA)), prime: p(q("nx.wild.example.", dns.TypeA)), inline: true},
		{name: "granted, not yet cached", pkt: p(q("a.b.wild.example.", dns.TypeA))},
		{name: "denied", pkt: p(q("evil.example.", dns.TypeA)), inline: true},
		{name: "denied, 0x20, edns", pkt: p(q("EvIl.ExAmPlE.", dns.TypeAAAA, withEDNS(1232, true))), inline: true},
		{name: "denied ip-like name", pkt: p(q("10.0.0.1.", dns.TypeA)), inline: true},
		{name: "denied leading hyphen", pkt: p(q("-x.wild.example.", dns.TypeA)), inline: true},
		{name: "denied apex of wildcard", pkt: p(q("wild.example.", dns.TypeA)), inline: true},
		{name: "qtype refused", pkt: p(q("granted.example.", dns.TypeTXT)), inline: true},
		{name: "unknown qtype", pkt: p(q("granted.example.", 65000)), inline: true},
		{name: "ANY", pkt: p(q("granted.example.", dns.TypeANY)), inline: true},
		{name: "truncated for 512", pkt: p(q("big.wild.example.", dns.TypeA)), prime: p(q("big.wild.example.", dns.TypeA, withEDNS(1232, false)))},
		{name: "compressed for 1232", pkt: p(q("big.wild.example.", dns.TypeA, withEDNS(1232, false))), prime: p(q("big.wild.example.", dns.TypeA, withEDNS(1232, false)))},
		{name: "edns subnet option", pkt: p(q("granted.example.", dns.TypeA, withEDNS(1232, false, subnet))), prime: p(q("granted.example.", dns.TypeA, withEDNS(1232, false)))},
		{name: "trailing byte", pkt: append(p(q("granted.example.", dns.TypeA)), 0), prime: p(q("granted.example.", dns.TypeA))},
		{name: "escaped dot", pkt: p(q(`a\.wild.example.`, dns.TypeA)), inline: true},
		{name: "non-ascii byte", pkt: nonASCII, inline: true},
		{name: "question missing", pkt: headerOnly, inline: true},
		{name: "chaos class", pkt: p(q("version.bind.", dns.TypeTXT, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })), inline: true},
		{name: "edns version 1", pkt: p(q("granted.example.", dns.TypeA, withEDNS(1232, false), func(m *dns.Msg) { m.IsEdns0().SetVersion(1) })), inline: true},
		{name: "garbage", pkt: garbage},
		{name: "response", pkt: p(response)},
		{name: "two questions", pkt: p(twoQ), inline: true, reject: true},
		{name: "notify", pkt: p(q("granted.example.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify })), inline: true, reject: true},
	}
}

// TestFastPathMatchesFullPath: for every kind of query, the reply the UDP
// reader sends and the decision line it writes are the ones ServeDNS
// gives the same bytes, byte for byte; the common kinds never leave the
// reader.
func TestFastPathMatchesFullPath(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(bigZone()...))
	tr := newTestReader(e.srv, netip.Addr{})
	for _, tc := range diffCases(t) {
		if tc.reject {
			continue
		}
		if tc.prime != nil {
			fullAsk(t, e.srv, tc.prime)
		}
		n := len(e.rec.All())
		got, inline := tr.ask(t, tc.pkt)
		gotLog := e.rec.All()[n:]
		n = len(e.rec.All())
		want := fullAsk(t, e.srv, tc.pkt)
		wantLog := e.rec.All()[n:]
		if !bytes.Equal(got, want) {
			t.Errorf("%s: fast path replied\n%x\nwant\n%x", tc.name, got, want)
		}
		if !reflect.DeepEqual(gotLog, wantLog) {
			t.Errorf("%s: fast path logged %+v, want %+v", tc.name, gotLog, wantLog)
		}
		if tc.inline && !inline {
			t.Errorf("%s: answered on a goroutine, want inline", tc.name)
		}
	}
}

// TestUDPMatchesMiekgServer sends every case to the server as it was
// (miekg's UDP server in front of ServeDNS) and as it is, on loopback
// sockets, and compares the replies.
func TestUDPMatchesMiekgServer(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(bigZone()...))
	oldPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := e.srv.newServer(func(srv *dns.Server) { srv.PacketConn = oldPC })
	errc := make(chan error, 1)
	if err := start(old, errc); err != nil {
		t.Fatal(err)
	}
	defer old.Shutdown()
	newAddr, _, stop := serveSockets(t, e)
	defer stop()

	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange := func(to string, pkt []byte) []byte {
		t.Helper()
		addr, _ := net.ResolveUDPAddr("udp", to)
		if _, err := c.WriteTo(pkt, addr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no reply from %s: %v", to, err)
		}
		return buf[:n]
	}
	for _, tc := range diffCases(t) {
		if tc.name == "garbage" || tc.name == "response" {
			continue // no reply to wait for; TestMalformedMessagesAreLoggedAndDropped
		}
		if tc.prime != nil {
			exchange(oldPC.LocalAddr().String(), tc.prime)
		}
		want := exchange(oldPC.LocalAddr().String(), tc.pkt)
		got := exchange(newAddr, tc.pkt)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: replied\n%x\nmiekg's server replied\n%x", tc.name, got, want)
		}
	}
}
