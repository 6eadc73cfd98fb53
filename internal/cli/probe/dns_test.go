package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// respond builds an answer to query with rcode and, when addr is valid, one
// A record pointing back at the question name.
func respond(query []byte, rcode int, addr netip.Addr) []byte {
	msg := append([]byte(nil), query...)
	flags := binary.BigEndian.Uint16(msg[2:])
	binary.BigEndian.PutUint16(msg[2:], flags|0x8080|uint16(rcode)) // QR, RA
	if addr.IsValid() {
		binary.BigEndian.PutUint16(msg[6:], 1)
		msg = append(msg, 0xc0, 12, 0, typeA, 0, classIN, 0, 0, 0, 60, 0, 4)
		msg = append(msg, addr.AsSlice()...)
	}
	return msg
}

// dnsServer serves UDP on 127.0.0.1:0 with answer, which returns the
// datagrams to send back (none to stay silent). It stops when the test ends.
func dnsServer(t *testing.T, answer func(q []byte) [][]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, resp := range answer(buf[:n]) {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestCheckDNS(t *testing.T) {
	one := func(rcode int, addr netip.Addr) func([]byte) [][]byte {
		return func(q []byte) [][]byte { return [][]byte{respond(q, rcode, addr)} }
	}
	nx := dnsServer(t, one(RcodeNXDomain, netip.Addr{}))
	leak := dnsServer(t, one(0, netip.MustParseAddr("192.0.2.7")))
	servfail := dnsServer(t, one(RcodeServFail, netip.Addr{}))
	nodata := dnsServer(t, one(0, netip.Addr{}))
	silent := dnsServer(t, func(q []byte) [][]byte { return nil })
	// An answer with another ID (a spoof, or a late answer to an earlier
	// query) that would leak an address, then the real one: the client
	// must skip the first.
	stray := dnsServer(t, func(q []byte) [][]byte {
		bad := respond(q, 0, netip.MustParseAddr("192.0.2.9"))
		bad[0] ^= 0xff
		return [][]byte{bad, respond(q, RcodeNXDomain, netip.Addr{})}
	})
	strayOnly := dnsServer(t, func(q []byte) [][]byte {
		bad := respond(q, 0, netip.MustParseAddr("192.0.2.9"))
		bad[0] ^= 0xff
		return [][]byte{bad}
	})
	tests := []struct {
		srv    string
		want   Status
		detail string
	}{
		{nx, Pass, "egressd-probe.invalid: NXDOMAIN in"},
		{leak, Hole, "egressd-probe.invalid resolved to [192.0.2.7]"},
		{servfail, Fail, "egressd-probe.invalid: SERVFAIL without addresses"},
		{nodata, Fail, "egressd-probe.invalid: NOERROR without addresses"},
		{silent, Fail, "egressd-probe.invalid: no answer"},
		{stray, Pass, "egressd-probe.invalid: NXDOMAIN in"},
		{strayOnly, Fail, "egressd-probe.invalid: no answer"},
	}
	var servers []string
	for _, tt := range tests {
		servers = append(servers, tt.srv)
	}
	start := time.Now()
	rep := run(t, Options{DNS: servers, DNSTimeout: 400 * time.Millisecond})
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("DNS checks took %s, want them concurrent and bounded by the 400ms timeout", el)
	}
	got := map[string]Result{}
	for _, r := range rep.Find(CheckDNS) {
		got[r.Target] = r
	}
	for _, tt := range tests {
		r := got[tt.srv]
		if r.Status != tt.want || !strings.HasPrefix(r.Detail, tt.detail) {
			t.Errorf("dns %s: got %v %q, want %v %q...", tt.srv, r.Status, r.Detail, tt.want, tt.detail)
		}
	}
}

func TestLookupA(t *testing.T) {
	srv := dnsServer(t, func(q []byte) [][]byte { return [][]byte{respond(q, 0, netip.MustParseAddr("10.1.2.3"))} })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ans, err := LookupA(ctx, nil, srv, "granted.test.")
	if err != nil {
		t.Fatal(err)
	}
	if ans.Rcode != 0 || len(ans.Addrs) != 1 || ans.Addrs[0] != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("LookupA: got %+v, want NOERROR [10.1.2.3]", ans)
	}
}

func TestBuildQuery(t *testing.T) {
	q, err := buildQuery(0xabcd, "Api.Example.com.", typeA)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
		3, 'A', 'p', 'i', 7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1}
	if !bytes.Equal(q, want) {
		t.Errorf("buildQuery:\n got %v\nwant %v", q, want)
	}
	for _, bad := range []string{"", ".", "a..b", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "com"} {
		if _, err := buildQuery(1, bad, typeA); err == nil {
			t.Errorf("buildQuery(%q): got nil error, want one", bad)
		}
	}
}

func TestParseResponse(t *testing.T) {
	q, _ := buildQuery(7, "x.test", typeA)
	ok := respond(q, 0, netip.MustParseAddr("10.0.0.1"))
	tests := []struct {
		name  string
		msg   []byte
		id    uint16
		rcode int
		addrs int
		err   error
	}{
		{"answer", ok, 7, 0, 1, nil},
		{"nxdomain", respond(q, RcodeNXDomain, netip.Addr{}), 7, RcodeNXDomain, 0, nil},
		{"other id", ok, 8, 0, 0, errWrongID},
		{"query not response", q, 7, 0, 0, errMalformed},
		{"short header", ok[:11], 7, 0, 0, errMalformed},
		{"truncated rdata", ok[:len(ok)-1], 7, 0, 0, errMalformed},
		{"truncated question", ok[:14], 7, 0, 0, errMalformed},
	}
	for _, tt := range tests {
		rcode, addrs, err := parseResponse(tt.msg, tt.id)
		if !errors.Is(err, tt.err) || (err == nil && (rcode != tt.rcode || len(addrs) != tt.addrs)) {
			t.Errorf("%s: got rcode %d, %d addrs, err %v; want %d, %d, %v", tt.name, rcode, len(addrs), err, tt.rcode, tt.addrs, tt.err)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	q, _ := buildQuery(7, "x.test", typeA)
	f.Add(respond(q, 0, netip.MustParseAddr("10.0.0.1")))
	f.Add(respond(q, RcodeNXDomain, netip.Addr{}))
	f.Add([]byte{0, 7, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, addrs, err := parseResponse(msg, 7)
		if err != nil && len(addrs) != 0 {
			t.Fatalf("addresses returned with error %v", err)
		}
		for _, a := range addrs {
			if !a.Is4() && !a.Is6() {
				t.Fatalf("invalid address %v", a)
			}
		}
	})
}
