//go:build hardening

package hardening

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

var (
	rPrivate  = vocab.ReasonPrivateAddress
	rMetadata = vocab.ReasonMetadataAddress
	rBad      = vocab.ReasonBadRequest
	rSelf     = vocab.ReasonSelfAddress
	rNotAllow = vocab.ReasonNotAllowlisted
	rPort     = vocab.ReasonPortNotAllowed
	rResolve  = vocab.ReasonResolveFailed
)

// spelling is one way to write a target host, and the reasons egressd may
// give for denying it (more than one where two are equally right, such as
// a full-width digit name that is either malformed or, once mapped, a
// loopback literal).
type spelling struct {
	host    string
	reasons []vocab.Reason
}

// parserRefused are spellings net/http's request parser may refuse (request
// line or Host header) before egressd's pipeline runs: a bare 400. That
// still denies them; TestParserRejectsAreLogged asserts such refusals are
// logged too.
var parserRefused = map[string]bool{
	"%31%32%37.0.0.1": true, "[127.0.0.1]": true, "127.0.0.1 ": true,
	"１２７.０.０.１": true, "127。0。0。1": true, "grаnted.test": true,
}

func one(r ...vocab.Reason) []vocab.Reason { return r }

// addressSpellings names loopback, private, link-local, metadata and
// special addresses in every form a parser might accept.
var addressSpellings = []spelling{
	// 127.0.0.1, egressd's own address, in every IPv4 spelling inet_aton takes.
	{"127.0.0.1", one(rPrivate)},
	{"2130706433", one(rPrivate)},
	{"0177.0.0.1", one(rPrivate)},
	{"0177.0.0.01", one(rPrivate)},
	{"0x7f.1", one(rPrivate)},
	{"0x7f000001", one(rPrivate)},
	{"0X7F.0.0.1", one(rPrivate)},
	{"017700000001", one(rPrivate)},
	{"127.1", one(rPrivate)},
	{"127.0.1", one(rPrivate)},
	{"127.000.000.001", one(rPrivate)},
	{"127.0.0.1.", one(rPrivate)},
	{"127.255.255.254", one(rPrivate)},
	// ... and IPv6 forms that reach it.
	{"[::1]", one(rPrivate)},
	{"[0:0:0:0:0:0:0:1]", one(rPrivate)},
	{"[::ffff:127.0.0.1]", one(rPrivate)},
	{"[::ffff:7f00:1]", one(rPrivate)},
	{"[0:0:0:0:0:ffff:7f00:0001]", one(rPrivate)},
	{"[::127.0.0.1]", one(rPrivate)},
	{"[64:ff9b::7f00:1]", one(rPrivate)},
	{"[2002:7f00:1::]", one(rPrivate)},
	{"[2001:0:4136:e378:8000:63bf:80ff:fffe]", one(rPrivate)}, // Teredo, client ~0x80fffffe = 127.0.0.1
	// Unspecified: connecting to 0.0.0.0 reaches the local host.
	{"0.0.0.0", one(rPrivate)},
	{"0", one(rPrivate)},
	{"[::]", one(rPrivate)},
	{"[::ffff:0.0.0.0]", one(rPrivate)},
	// Cloud metadata, never grantable.
	{"169.254.169.254", one(rMetadata)},
	{"2852039166", one(rMetadata)},
	{"0xa9fea9fe", one(rMetadata)},
	{"0251.0376.0251.0376", one(rMetadata)},
	{"0xa9.0xfe.0xa9.0xfe", one(rMetadata)},
	{"169.254.43518", one(rMetadata)},
	{"169.16689662", one(rMetadata)},
	{"169.254.169.254.", one(rMetadata)},
	{"[::ffff:169.254.169.254]", one(rMetadata)},
	{"[::ffff:a9fe:a9fe]", one(rMetadata)},
	{"[64:ff9b::a9fe:a9fe]", one(rMetadata)},
	{"[64:ff9b::169.254.169.254]", one(rMetadata)},
	{"[2002:a9fe:a9fe::]", one(rMetadata)},
	{"[2002:a9fe:a9fe:ffff:ffff:ffff:ffff:ffff]", one(rMetadata)},
	{"[2001:0:4136:e378:8000:63bf:5601:5601]", one(rMetadata)}, // Teredo
	{"100.100.100.200", one(rMetadata)},
	{"[fd00:ec2::254]", one(rMetadata)},
	// Private, shared, link-local and other special ranges.
	{"10.0.0.1", one(rPrivate)},
	{"012.0.0.1", one(rPrivate)},
	{"0xa.1", one(rPrivate)},
	{"167772161", one(rPrivate)},
	{"192.168.0.1", one(rPrivate)},
	{"172.16.0.1", one(rPrivate)},
	{"172.31.255.255", one(rPrivate)},
	{"100.64.0.1", one(rPrivate)},
	{"169.254.1.1", one(rPrivate)},
	{"224.0.0.1", one(rPrivate)},
	{"255.255.255.255", one(rPrivate)},
	{"240.0.0.1", one(rPrivate)},
	{"[fe80::1]", one(rPrivate)},
	{"[fc00::1]", one(rPrivate)},
	{"[fd12:3456::1]", one(rPrivate)},
	{"[ff02::1]", one(rPrivate)},
	{"[::ffff:10.0.0.1]", one(rPrivate)},
	{"[64:ff9b::a00:1]", one(rPrivate)},
	{"[64:ff9b:1::a00:1]", one(rPrivate)},
	// The trap address next to the upstream: private, not in networks.allow.
	{trapIP, one(rPrivate)},
	{"0x7f000003", one(rPrivate)},
	{"[::ffff:127.0.0.3]", one(rPrivate)},
	// Malformed spellings: refused before anything is resolved or dialed.
	{"%31%32%37.0.0.1", one(rBad, rPrivate)},
	{"127.0.0.1%2500", one(rBad)},
	{"[fe80::1%25lo]", one(rBad)},
	{"[::1%25lo]", one(rBad)},
	{"127.0.0.0x1", one(rPrivate)}, // inet_aton reads each part in its own base
	{"127.0.0.256", one(rBad)},
	{"1.2.3.4.5", one(rBad)},
	{"0x100000000", one(rBad)},
	{"08.0.0.1", one(rBad)},
	{"[127.0.0.1]", one(rBad)},
	{"127.0.0.1..", one(rBad)},
	{".127.0.0.1", one(rBad)},
	{"127.0.0.1 ", one(rBad)},
	// Full-width digits and ideographic dots map (IDNA) to 127.0.0.1.
	{"１２７.０.０.１", one(rBad, rPrivate)},
	{"127。0。0。1", one(rBad, rPrivate)},
	// A Cyrillic "а" in granted.test is another name.
	{"grаnted.test", one(rNotAllow, rBad)},
	{"xn--grnted-4fg.test", one(rNotAllow)},
	{"granted.test.evil", one(rNotAllow)},
	{"evilgranted.test", one(rNotAllow)},
}

// nameSpellings are granted names whose DNS answers are the problem.
var nameSpellings = []spelling{
	{"loop.test", one(rPrivate)},
	{"LOOP.test.", one(rPrivate)},
	{"LoOp.TeSt", one(rPrivate)},
	{"meta.test", one(rMetadata)},
	{"ten.test", one(rPrivate)},
	{"trap.test", one(rPrivate)},
	{"mapped.test", one(rPrivate)},
	{"nat64.test", one(rMetadata)},
	{"sixtofour.test", one(rMetadata)},
	{"teredo.test", one(rMetadata)},
	{"v6loop.test", one(rPrivate)},
	{"mixed.test", one(rPrivate)},
	{"cname.test", one(rPrivate)},
	{"ungranted.test", one(rNotAllow)},
	{"missing.test", one(rResolve)},
}

// statusOf is the HTTP status the proxy must answer a denial with.
func statusOf(r vocab.Reason) int {
	switch r {
	case vocab.ReasonBadRequest:
		return http.StatusBadRequest
	case vocab.ReasonResolveFailed:
		return http.StatusBadGateway
	case vocab.ReasonRateLimited:
		return http.StatusTooManyRequests
	case vocab.ReasonTooManyConnections:
		return http.StatusServiceUnavailable
	}
	return http.StatusForbidden
}

// checkDenied asserts a reply is a denial with one of the wanted reasons
// and the right status, and that the decision log has it for this client.
func checkDenied(t *testing.T, e *proc, src string, r reply, sp spelling) {
	t.Helper()
	want := sp.reasons
	if parserRefused[sp.host] && r.Status == http.StatusBadRequest && r.Reason == "" {
		return // refused by the HTTP parser; see TestParserRejectsAreLogged
	}
	if r.Status == 0 {
		t.Errorf("got %v, want a denial (%v)", r, want)
		return
	}
	got, ok := vocab.ParseReason(r.Reason)
	if !ok || !slices.Contains(want, got) {
		t.Errorf("got %v, want X-Egressd-Reason in %v", r, want)
		return
	}
	if r.Status != statusOf(got) {
		t.Errorf("got status %d for %s, want %d", r.Status, got, statusOf(got))
	}
	es := e.log.waitOrNil(logWait, match{Event: "decision", Client: src, Reason: got, Denied: true})
	if es == nil {
		t.Errorf("denial %v is not in the decision log (client %s)", r, src)
	}
}

// TestBypassCatalogue sends every spelling as a CONNECT authority and as
// an absolute URI: each is denied with the right status and reason,
// logged, and nothing but the granted upstream is ever dialed.
func TestBypassCatalogue(t *testing.T) {
	w := startWall(t)
	before := len(w.web.requests())
	echoBefore := w.echo.total.Load()
	all := append(append([]spelling{}, addressSpellings...), nameSpellings...)
	for _, sp := range all {
		t.Run("connect/"+sp.host, func(t *testing.T) {
			src := newClientIP()
			_, r := connectRaw(t, w.e, src, joinPort(sp.host, w.echo.port))
			checkDenied(t, w.e, src, r, sp)
		})
		t.Run("http/"+sp.host, func(t *testing.T) {
			src := newClientIP()
			r := getRaw(t, w.e, src, "http://"+joinPort(sp.host, w.web.port)+"/probe")
			checkDenied(t, w.e, src, r, sp)
		})
	}
	t.Run("port_not_allowed", func(t *testing.T) {
		src := newClientIP()
		_, r := connectRaw(t, w.e, src, "granted.test:1")
		checkDenied(t, w.e, src, r, spelling{reasons: one(rPort)})
	})
	if n := len(w.web.requests()) - before; n != 0 {
		t.Errorf("the web upstream received %d requests during the catalogue, want 0", n)
	}
	if n := w.echo.total.Load() - echoBefore; n != 0 {
		t.Errorf("the tunnel upstream received %d connections during the catalogue, want 0", n)
	}
	w.noTrapHits(t)
	w.e.alive(t)
	// The wall still lets the granted name through, in both forms.
	src := newClientIP()
	if r := getRaw(t, w.e, src, "http://granted.test:"+strconv.Itoa(w.web.port)+"/ok"); r.Status != 200 {
		t.Errorf("granted GET after the catalogue: got %v, want 200", r)
	}
	_, r := connectRaw(t, w.e, newClientIP(), "granted.test:"+strconv.Itoa(w.echo.port))
	if r.Status != 200 {
		t.Errorf("granted CONNECT after the catalogue: got %v, want 200", r)
	}
}

// joinPort appends :port to a host that may already be bracketed.
func joinPort(host string, port int) string {
	return host + ":" + strconv.Itoa(port)
}

// caseName keeps subtest names readable for odd spellings.
func caseName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, fmt.Sprintf("%q", s))
}
