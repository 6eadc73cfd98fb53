//go:build hardening

package hardening

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestSNIMismatch: after a CONNECT to a granted name, a TLS ClientHello
// naming another host closes the tunnel (sni_mismatch, logged) before a
// byte of it reaches the upstream — however the hello is cut up.
func TestSNIMismatch(t *testing.T) {
	w := startWall(t)
	authority := "granted.test:" + strconv.Itoa(w.echo.port)
	open := func(t *testing.T) (net.Conn, string) {
		src := newClientIP()
		c, r := connectRaw(t, w.e, src, authority)
		if r.Status != 200 {
			t.Fatalf("CONNECT %s: got %v, want 200", authority, r)
		}
		return c, src
	}
	t.Run("crypto/tls client", func(t *testing.T) {
		c, src := open(t)
		tc := tls.Client(c, &tls.Config{ServerName: "evil-tls.test", InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err == nil {
			t.Fatal("handshake through a mismatched tunnel succeeded")
		}
		w.e.log.wait(t, logWait, match{Event: "decision", Client: src, Reason: vocab.ReasonSNIMismatch, Denied: true})
	})
	for _, h := range badHellos {
		t.Run(h.name, func(t *testing.T) {
			c, src := open(t)
			writeSplit(t, c, h.bytes, h.splits)
			// The tunnel must end: egressd closes it (the truncated hello
			// after timeouts.header).
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
				t.Errorf("tunnel after a bad hello: read %d bytes, err %v; want it closed with nothing echoed", n, err)
			}
			es := w.e.log.waitOrNil(logWait, match{Event: "decision", Client: src, Denied: true})
			if es == nil || !containsReason(h.want, es[0].Reason) {
				t.Errorf("decision log for %s: got %v, want a denial in %v", src, es, h.want)
			}
		})
	}
	if got := w.echo.received(); strings.Contains(got, "evil") {
		t.Errorf("the upstream received ClientHello bytes naming an evil host: %q", got)
	}
	t.Run("matching SNI is relayed", func(t *testing.T) {
		c, _ := open(t)
		hello := clientHello(sniExt("GRANTED.test."))
		writeSplit(t, c, hello, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(hello))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(hello) {
			t.Errorf("echo of a hello naming the CONNECT host: err %v; want the hello back", err)
		}
	})
	w.e.alive(t)
}

func containsReason(rs []vocab.Reason, r vocab.Reason) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// badHellos are ClientHellos that must not pass a tunnel to granted.test:
// a wrong name however framed, several names, odd names, or a hello that
// never completes.
var badHellos = []struct {
	name   string
	bytes  []byte
	splits int // write in this many pieces
	want   []vocab.Reason
}{
	{"one record", clientHello(sniExt("evil-one.test")), 1, one(vocab.ReasonSNIMismatch)},
	{"byte by byte", clientHello(sniExt("evil-bytes.test")), 0, one(vocab.ReasonSNIMismatch, rBad)},
	{"16-byte records", fragment(clientHello(sniExt("evil-frag.test")), 16), 1, one(vocab.ReasonSNIMismatch)},
	{"1-byte records", fragment(clientHello(sniExt("evil-frag1.test")), 1), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"granted then evil in one list", clientHello(sniExt("granted.test", "evil-list.test")), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"evil then granted in one list", clientHello(sniExt("evil-list2.test", "granted.test")), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"two server_name extensions", clientHello(sniExt("granted.test"), sniExt("evil-dup.test")), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"IP literal SNI", clientHello(sniExt("127.0.0.1")), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"subdomain SNI", clientHello(sniExt("evil.granted.test")), 1, one(vocab.ReasonSNIMismatch)},
	{"NUL in SNI", clientHello(sniExt("granted.test\x00.evil-nul.test")), 1, one(vocab.ReasonSNIMismatch, rBad)},
	{"truncated hello", clientHello(sniExt("evil-trunc.test"))[:40], 1, one(rBad)},
}

// writeSplit writes b in n pieces (0: one byte at a time).
func writeSplit(t testing.TB, c net.Conn, b []byte, n int) {
	t.Helper()
	size := len(b)
	if n == 0 {
		size = 1
	} else if n > 1 {
		size = (len(b) + n - 1) / n
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for len(b) > 0 {
		k := min(size, len(b))
		if _, err := c.Write(b[:k]); err != nil {
			return // egressd closed the tunnel mid-hello: fine
		}
		b = b[k:]
	}
}

// sniExt is a server_name extension listing names (RFC 6066 §3).
func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	body := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	body = append(body, list...)
	ext := []byte{0, 0}
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(body)))
	return append(ext, body...)
}

// clientHello is a minimal TLS 1.2-framed ClientHello record carrying exts.
func clientHello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	var all []byte
	for _, e := range exts {
		all = append(all, e...)
	}
	body = binary.BigEndian.AppendUint16(body, uint16(len(all)))
	body = append(body, all...)
	hs := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	return fragment(append([]byte{22, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...), 1<<14)
}

// fragment re-frames the handshake bytes of one record into records of at
// most n bytes each.
func fragment(record []byte, n int) []byte {
	hs := record[5:]
	var out []byte
	for len(hs) > 0 {
		k := min(n, len(hs))
		out = append(out, 22, 3, 1, byte(k>>8), byte(k))
		out = append(out, hs[:k]...)
		hs = hs[k:]
	}
	return out
}

// TestRebinding: a granted name answers the allowed upstream, then (TTL 0)
// the trap address, alternately. egressd resolves once per request and
// dials exactly the address it checked: the allowed answer connects, the
// private one is denied, and the trap never sees a connection.
func TestRebinding(t *testing.T) {
	w := startWall(t)
	const rounds = 20
	var ok, denied int
	echoBefore := w.echo.total.Load()
	for i := range rounds {
		src := newClientIP()
		var r reply
		if i%2 == 0 {
			_, r = connectRaw(t, w.e, src, "rebind.test:"+strconv.Itoa(w.echo.port))
		} else {
			r = getRaw(t, w.e, src, "http://rebind.test:"+strconv.Itoa(w.web.port)+"/rebind")
		}
		switch {
		case r.Status == 200:
			ok++
		case r.Status == 403 && r.Reason == rPrivate.String():
			denied++
			w.e.log.wait(t, logWait, match{Event: "decision", Client: src, Reason: rPrivate, Denied: true})
		default:
			t.Errorf("request %d: got %v, want 200 or 403 private_address", i, r)
		}
	}
	t.Logf("rebinding: %d allowed, %d denied, %d A queries", ok, denied, w.dns.rebindQueries("rebind.test"))
	if ok == 0 || denied == 0 {
		t.Errorf("got %d allowed and %d denied, want both: the answers alternate", ok, denied)
	}
	// Every request looked the name up afresh: no cache hid a rebind.
	if q := w.dns.rebindQueries("rebind.test"); q < rounds {
		t.Errorf("upstream DNS saw %d A queries for rebind.test, want >= %d", q, rounds)
	}
	// Every allowed request reached the upstream, on the checked address.
	reached := int(w.echo.total.Load() - echoBefore)
	for _, s := range w.web.requests() {
		if s.URI == "/rebind" {
			reached++
		}
	}
	if reached != ok {
		t.Errorf("upstream saw %d rebinding requests, want %d (one per allowed request)", reached, ok)
	}
	w.noTrapHits(t)
	// The DNS listener strips the private answer too.
	for range 6 {
		m := dnsQuery(t, w.e, newClientIP(), "rebind.test.", dnsTypeA)
		for _, a := range answerAddrs(m) {
			if a != upstreamIP {
				t.Errorf("DNS answered rebind.test with %s, want only %s", a, upstreamIP)
			}
		}
	}
	w.e.alive(t)
}

// TestConnectInsideConnect: a tunnel to a granted host carries whatever the
// client sends, including another CONNECT, to that host — egressd does not
// interpret it and never connects to itself.
func TestConnectInsideConnect(t *testing.T) {
	w := startWall(t)
	src := newClientIP()
	c, r := connectRaw(t, w.e, src, "granted.test:"+strconv.Itoa(w.echo.port))
	if r.Status != 200 {
		t.Fatalf("outer CONNECT: got %v, want 200", r)
	}
	inner := "CONNECT " + w.e.a().Proxy + " HTTP/1.1\r\nHost: " + w.e.a().Proxy + "\r\n\r\n"
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, inner); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(inner))
	if _, err := io.ReadFull(bufio.NewReader(c), got); err != nil || string(got) != inner {
		t.Errorf("inner CONNECT came back as %q (err %v), want it echoed by the upstream", got, err)
	}
	if !strings.Contains(w.echo.received(), inner) {
		t.Errorf("upstream received %q, want the inner CONNECT verbatim", w.echo.received())
	}
	c.Close()
	// Direct CONNECTs to egressd's own listeners are refused (127.0.0.1 is
	// not in this policy's networks.allow, so the address check answers).
	for _, a := range []string{w.e.a().Proxy, w.e.a().Admin, w.e.a().DNS} {
		src := newClientIP()
		_, r := connectRaw(t, w.e, src, a)
		if r.Status != 403 || r.Reason != rPrivate.String() {
			t.Errorf("CONNECT %s: got %v, want 403 private_address", a, r)
		}
	}
	for _, e := range w.e.log.refresh() {
		if e.Client == "127.0.0.1" || e.Client == upstreamIP {
			t.Errorf("egressd logged a request from %s: it connected to itself (%+v)", e.Client, e)
		}
	}
	w.noTrapHits(t)
	w.e.alive(t)
}

var _ = fmt.Sprint
var _ = http.MethodGet
