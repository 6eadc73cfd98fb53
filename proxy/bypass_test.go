package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// literalSpellings are ways to write 127.0.0.1 that a string match on
// "127.0.0.1" would miss.
var literalSpellings = []string{
	"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001", "127.1", "0x7F.0.0.1", "[::ffff:127.0.0.1]",
}

func TestBypassIPLiteralsWithoutGrant(t *testing.T) {
	f := newFixture(t, fixOpts{})
	hp := strconv.Itoa(f.http.port)
	for _, lit := range literalSpellings {
		t.Run(lit, func(t *testing.T) {
			checkDenied(t, f.env, denyCase{"connect", connectReq(lit + ":" + hp), 403,
				vocab.ReasonIPLiteralNotAllowed, "127.0.0.1", `cidr: 127.0.0.1/32`})
			f.rec.Reset()
			checkDenied(t, f.env, denyCase{"http", getReq("http://"+lit+":"+hp+"/", lit+":"+hp), 403,
				vocab.ReasonIPLiteralNotAllowed, "127.0.0.1", `cidr: 127.0.0.1/32`})
			f.rec.Reset()
		})
	}
	checkDenied(t, f.env, denyCase{"ipv6 loopback", connectReq("[::1]:" + hp), 403,
		vocab.ReasonPrivateAddress, "::1", "networks.allow"})
	checkDenied(t, f.env, denyCase{"mapped metadata literal", connectReq("[::ffff:169.254.169.254]:80"), 403,
		vocab.ReasonMetadataAddress, "169.254.169.254", "never"})
	if f.http.count() != 0 {
		t.Errorf("upstream reached %d times, want 0", f.http.count())
	}
}

func TestIPLiteralsWithCIDRGrantDialCanonicalAddress(t *testing.T) {
	f := newFixture(t, fixOpts{extraAllow: func(f *fixture) string {
		return "  - {cidr: 127.0.0.1/32, ports: " + ports(f.http.port) + "}\n"
	}})
	hp := strconv.Itoa(f.http.port)
	for _, lit := range literalSpellings {
		resp, body := f.get("http://"+lit+":"+hp+"/x", lit+":"+hp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s with cidr grant: got %d %q, want 200", lit, resp.StatusCode, body)
			continue
		}
		if got := f.http.last().Host; got != "127.0.0.1:"+hp {
			t.Errorf("%s: upstream Host got %q, want the canonical 127.0.0.1:%s", lit, got, hp)
		}
	}
}

func TestCIDRGrantDoesNotOpenPrivateRanges(t *testing.T) {
	up := newUpstream(t, false, nil)
	e := startProxy(t, func(int) string {
		return "version: 1\nallow:\n  - {cidr: 127.0.0.0/8, ports: " + ports(up.port) + "}\n"
	}, nil)
	checkDenied(t, e, denyCase{"loopback literal", connectReq("2130706433:" + strconv.Itoa(up.port)), 403,
		vocab.ReasonPrivateAddress, "127.0.0.1", "networks.allow"})
}

// TestBypassNamesResolvingToSpecialAddresses: a granted name is only as
// good as the addresses it resolves to, in every family and spelling.
func TestBypassNamesResolvingToSpecialAddresses(t *testing.T) {
	f := newFixture(t, fixOpts{})
	cases := []struct {
		host   string
		reason vocab.Reason
	}{
		{"meta.b.test", vocab.ReasonMetadataAddress},   // 169.254.169.254
		{"private.b.test", vocab.ReasonPrivateAddress}, // 10.1.2.3
		{"loop6.b.test", vocab.ReasonPrivateAddress},   // ::1 (not in networks.allow)
		{"mapped.b.test", vocab.ReasonPrivateAddress},  // ::ffff:10.0.0.1
		{"mixed.b.test", vocab.ReasonPrivateAddress},   // 127.0.0.1 and 10.0.0.1: all or nothing
		{"denynet.b.test", vocab.ReasonDeniedNetwork},  // 127.0.0.3 in networks.deny
		{"fail.b.test", vocab.ReasonResolveFailed},     // lookup error
		{"unknown.b.test", vocab.ReasonResolveFailed},  // no answer at all
	}
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			f.rec.Reset()
			status := statusFor(c.reason)
			checkDenied(t, f.env, denyCase{"connect", connectReq(f.ep(c.host)), status, c.reason, c.host, c.reason.String()})
			f.rec.Reset()
			checkDenied(t, f.env, denyCase{"http", getReq("http://"+f.hp(c.host)+"/", f.hp(c.host)), status, c.reason,
				c.host, c.reason.String()})
		})
	}
	// IPv4-mapped loopback is unmapped, checked as 127.0.0.1 and dialed so.
	if resp, body := f.get("http://"+f.hp("mappedloop.b.test")+"/", f.hp("mappedloop.b.test")); resp.StatusCode != http.StatusOK {
		t.Errorf("mappedloop.b.test: got %d %q, want 200", resp.StatusCode, body)
	}
}

// dialLog records every address the proxy dials.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *dialLog) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// TestBypassRebinding: the name answers 127.0.0.1 (allowed here through
// networks.allow) first and 10.0.0.1 afterwards. egressd dials only the
// addresses it checked: once no connection to the name is open, the next
// request looks the name up again, sees the private answer and is denied;
// nothing ever dials 10.0.0.1. (A request while a connection is open is
// TestDeferredCheckAtDial.)
func TestBypassRebinding(t *testing.T) {
	dl := &dialLog{}
	f := newFixture(t, fixOpts{mod: func(c *Config) { c.Dial = dl.dial }})
	url, host := "http://"+f.hp("rebind.b.test")+"/", f.hp("rebind.b.test")
	if resp, body := f.get(url, host); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %d %q, want 200", resp.StatusCode, body)
	}
	if n := f.res.callCount("rebind.b.test"); n != 1 {
		t.Errorf("lookups for one request: got %d, want 1", n)
	}
	f.dropPooled()
	checkDenied(t, f.env, denyCase{"rebound", getReq(url, host), 403, vocab.ReasonPrivateAddress,
		"rebind.b.test", "private"})
	if n := f.res.callCount("rebind.b.test"); n != 2 {
		t.Errorf("lookups for two requests: got %d, want 2", n)
	}
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "x")
	want := []string{"127.0.0.1:" + strconv.Itoa(f.http.port), "127.0.0.1:" + strconv.Itoa(f.echo)}
	got := dl.list()
	if len(got) != len(want) {
		t.Fatalf("dialed %v, want %v", got, want)
	}
	for i := range want {
		if _, err := netip.ParseAddrPort(got[i]); err != nil || got[i] != want[i] {
			t.Errorf("dial %d: got %q, want the checked address %q", i, got[i], want[i])
		}
	}
}

func TestBypassHostHeaderMismatch(t *testing.T) {
	f := newFixture(t, fixOpts{})
	url := "http://" + f.hp("granted.test") + "/"
	cases := []struct {
		host string
		ok   bool
	}{
		{f.hp("granted.test"), true},
		{f.hp("GRANTED.Test"), true},
		{f.hp("granted.test."), true},
		{f.hp("evil.test"), false},
		{"granted.test", false}, // port 80 is not the URI's port
		{f.hp("127.0.0.1"), false},
		{f.hp("other.test"), false},
	}
	for _, c := range cases {
		resp, body := f.get(url, c.host)
		if c.ok && resp.StatusCode != http.StatusOK {
			t.Errorf("Host %q: got %d %q, want 200", c.host, resp.StatusCode, body)
		}
		if !c.ok && (resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egressd-Reason") != "host_mismatch") {
			t.Errorf("Host %q: got %d %q, want 403 host_mismatch", c.host, resp.StatusCode, body)
		}
	}
}

// TestBypassHostHeaderPipelined sends several requests in one write, one
// with a body that looks like a request head, to show the Host check
// follows the server's framing and never attributes a head to the wrong
// request.
func TestBypassHostHeaderPipelined(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}})
	g, e := f.hp("granted.test"), f.hp("evil.test")
	fake := "GET http://" + g + "/ HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	chunked := strconv.FormatInt(int64(len(fake)), 16) + "\r\n" + fake + "\r\n0\r\n\r\n"
	raw := "POST http://" + g + "/a HTTP/1.1\r\nHost: " + g + "\r\nContent-Length: " + strconv.Itoa(len(fake)) + "\r\n\r\n" + fake +
		"GET http://" + g + "/b HTTP/1.1\r\nHost: " + e + "\r\n\r\n" +
		"POST http://" + g + "/c HTTP/1.1\r\nHost: " + g + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked +
		"GET http://" + g + "/d HTTP/1.1\r\nHost: " + e + "\r\n\r\n" +
		"POST http://" + g + "/e HTTP/1.1\r\nHost: " + g + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strings.TrimSuffix(chunked, "\r\n") + "X-Trailer: " + fake[:20] + "\r\n\r\n" +
		"GET http://" + g + "/f HTTP/1.1\r\nHost: " + e + "\r\n\r\n" +
		"GET http://" + g + "/g HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	c := f.dial()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	want := []int{200, 403, 200, 403, 200, 403, 200}
	for i, w := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != w {
			t.Errorf("response %d: got %d, want %d", i, resp.StatusCode, w)
		}
	}
	if n := f.http.count(); n != 4 {
		t.Errorf("upstream requests: got %d, want 4", n)
	}
}

func TestBypassUserinfo(t *testing.T) {
	f := newFixture(t, fixOpts{})
	for _, u := range []string{
		"http://granted.test@" + f.hp("evil.test") + "/",
		"http://user:pass@" + f.hp("granted.test") + "/",
		"http://" + f.hp("granted.test") + "@" + f.hp("evil.test") + "/",
	} {
		resp, body := f.get(u, f.hp("evil.test"))
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Egressd-Reason") != "bad_request" {
			t.Errorf("%s: got %d %q, want 400 bad_request", u, resp.StatusCode, body)
		}
	}
	if f.http.count() != 0 {
		t.Errorf("upstream reached %d times, want 0", f.http.count())
	}
}

func TestBypassWildcardEdges(t *testing.T) {
	f := newFixture(t, fixOpts{})
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"a.wild.test", true},
		{"a.b.wild.test", true},
		{"A.WILD.TEST.", true},
		{"wild.test", false},
		{"evilwild.test", false},
		{"a.wild.test.evil.test", false},
	} {
		resp, body := f.roundTrip(connectReq(f.ep(c.host)))
		if got := resp.StatusCode == http.StatusOK; got != c.ok {
			t.Errorf("CONNECT %s: got %d %q, want allowed=%v", c.host, resp.StatusCode, body, c.ok)
		}
		if !c.ok && resp.Header.Get("X-Egressd-Reason") != "not_allowlisted" {
			t.Errorf("CONNECT %s: reason %q, want not_allowlisted", c.host, resp.Header.Get("X-Egressd-Reason"))
		}
	}
}

func TestBypassOwnListener(t *testing.T) {
	for _, self := range []string{"exact", "unspecified"} {
		t.Run(self, func(t *testing.T) {
			f := newFixture(t, fixOpts{
				extraAllow: func(*fixture) string { return "  - {cidr: 127.0.0.1/32, ports: [1]}\n" },
				mod: func(c *Config) {
					if self == "unspecified" {
						c.Self = []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), c.Self[0].Port())}
					}
				},
			})
			p := strconv.Itoa(f.port)
			checkDenied(t, f.env, denyCase{"by name", connectReq("self.test:" + p), 403, vocab.ReasonSelfAddress,
				"self.test", "self_address"})
			f.rec.Reset()
			checkDenied(t, f.env, denyCase{"by name, http", getReq("http://self.test:"+p+"/", "self.test:"+p), 403,
				vocab.ReasonSelfAddress, "self.test", "self_address"})
		})
	}
}

func TestSNIMatchesConnectHost(t *testing.T) {
	f := newFixture(t, fixOpts{})
	cases := []struct {
		target, sni string
		reason      vocab.Reason // ReasonNone: the handshake must succeed
	}{
		{f.tp("granted.test"), "granted.test", vocab.ReasonNone},
		{f.tp("granted.test"), "Granted.Test", vocab.ReasonNone},
		{f.tp("granted.test"), "", vocab.ReasonNone}, // no SNI at all
		{f.tp("granted.test"), "evil.test", vocab.ReasonSNIMismatch},
		{f.tp("granted.test"), "other.test", vocab.ReasonSNIMismatch}, // granted too, but not what was checked
		{f.tp("a.wild.test"), "b.wild.test", vocab.ReasonSNIMismatch},
	}
	for _, c := range cases {
		t.Run(c.target+"/"+c.sni, func(t *testing.T) {
			f.rec.Reset()
			conn, br := f.connect(c.target)
			tc := tls.Client(&bufConn{Conn: conn, r: br}, &tls.Config{ServerName: c.sni, InsecureSkipVerify: true})
			err := tc.Handshake()
			if c.reason == vocab.ReasonNone {
				if err != nil {
					t.Fatalf("handshake with SNI %q: %v", c.sni, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("handshake with SNI %q succeeded, want the tunnel closed", c.sni)
			}
			host, _, _ := net.SplitHostPort(c.target)
			decisionFor(t, f.rec, host, c.reason)
		})
	}
	if got := f.tls.count(); got != 0 {
		t.Errorf("TLS upstream served %d requests, want 0 (handshakes only)", got)
	}
}

// bufConn reads through the bufio.Reader that parsed the CONNECT answer.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestBypassRequestAfterDeniedConnect: a plain request pipelined behind a
// denied CONNECT is never served: the connection closes after the denial.
func TestBypassRequestAfterDeniedConnect(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c := f.dial()
	br := bufio.NewReader(c)
	resp, _ := sendRaw(t, c, br, connectReq("evil.test:443")+getReq("http://"+f.hp("granted.test")+"/", f.hp("granted.test")))
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Errorf("denied CONNECT: got %d close=%v, want 403 and close", resp.StatusCode, resp.Close)
	}
	expectClosed(t, c, br)
	if n := f.http.count(); n != 0 {
		t.Errorf("pipelined request reached the upstream %d times, want 0", n)
	}
}

// TestBypassOptionsStar: "OPTIONS * HTTP/1.1" reaches egressd's handler
// (net/http's general OPTIONS handler is off), which refuses it (400
// bad_request, logged, nothing dialed) like any request it cannot
// forward. The Host-header shadow parser stays in step, so the request
// after it on the same connection is judged on its own: a granted GET is
// forwarded to its own host, and only it is dialed.
func TestBypassOptionsStar(t *testing.T) {
	g0 := "granted.test"
	cases := []struct{ name, options string }{
		{"plain", "OPTIONS * HTTP/1.1\r\nHost: %s\r\n\r\n"},
		{"with a body", "OPTIONS * HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dl := &dialLog{}
			f := newFixture(t, fixOpts{mod: func(c *Config) { c.Dial = dl.dial }})
			g := f.hp(g0)
			c := f.dial()
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, fmt.Sprintf(tc.options, g)+getReq("http://"+g+"/", g)); err != nil {
				t.Fatal(err)
			}
			first, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer to OPTIONS *: %v", err)
			}
			_, _ = io.Copy(io.Discard, first.Body)
			first.Body.Close()
			if first.StatusCode != http.StatusBadRequest || first.Header.Get("X-Egressd-Reason") != "bad_request" {
				t.Errorf("OPTIONS *: got %d reason %q, want 400 bad_request", first.StatusCode, first.Header.Get("X-Egressd-Reason"))
			}
			f.rec.WaitFor(t, waitLimit, "bad_request decision for OPTIONS", func(e declog.Entry) bool {
				return e.Event == vocab.EventDecision && e.Reason == vocab.ReasonBadRequest && e.Method == http.MethodOptions
			})
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer to the GET after OPTIONS *: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "hello from " + g + " /"; resp.StatusCode != http.StatusOK || string(body) != want {
				t.Errorf("GET after OPTIONS *: got %d %q, want 200 %q", resp.StatusCode, body, want)
			}
			if got := dl.list(); len(got) != 1 {
				t.Errorf("dialed %v, want only the GET's upstream", got)
			}
			if n := f.http.count(); n != 1 {
				t.Errorf("upstream reached %d times, want 1 (the GET)", n)
			}
		})
	}
}
