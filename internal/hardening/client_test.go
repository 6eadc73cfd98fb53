//go:build hardening

package hardening

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var clientSeq atomic.Uint32

// newClientIP returns a loopback source address no other case uses
// (127.10.0.1 upwards). Each case dials from its own address, so the
// decision-log lines with that client are its own, and no rate limit or
// connection cap is shared between cases.
func newClientIP() string {
	n := clientSeq.Add(1)
	return fmt.Sprintf("127.%d.%d.%d", 10+n/62500, (n/250)%250, n%250+1)
}

// dialFrom connects to addr from the loopback source address src.
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// reply is what came back for one raw request.
type reply struct {
	Status int
	Reason string // X-Egressd-Reason
	Body   string
	Err    error // transport error (connection closed, timeout)
	resp   *http.Response
	br     *bufio.Reader
}

// exchange writes raw on c and reads one response. method tells the
// reader how to frame it (a 2xx to CONNECT has no body).
func exchange(c net.Conn, method, raw string) reply {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, raw); err != nil {
		return reply{Err: err}
	}
	return readReply(c, bufio.NewReader(c), method)
}

func readReply(c net.Conn, br *bufio.Reader, method string) reply {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return reply{Err: err}
	}
	r := reply{Status: resp.StatusCode, Reason: resp.Header.Get("X-Egressd-Reason"), resp: resp, br: br}
	if method == http.MethodConnect && resp.StatusCode/100 == 2 {
		return r
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	r.Body, r.Err = string(b), err
	return r
}

// connectRaw sends a CONNECT for authority from a fresh client address.
func connectRaw(t testing.TB, e *proc, src, authority string) (net.Conn, reply) {
	t.Helper()
	c := dialFrom(t, src, e.a().Proxy)
	r := exchange(c, http.MethodConnect, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
	return c, r
}

// getRaw sends an absolute-URI GET (Host header from the URI) from src.
func getRaw(t testing.TB, e *proc, src, uri string) reply {
	t.Helper()
	host := uri
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		host = host[:i]
	}
	if i := strings.LastIndex(host, "@"); i >= 0 {
		host = host[i+1:]
	}
	c := dialFrom(t, src, e.a().Proxy)
	return exchange(c, http.MethodGet, "GET "+uri+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
}

func (r reply) String() string {
	if r.Err != nil && r.Status == 0 {
		return "error: " + r.Err.Error()
	}
	return fmt.Sprintf("%d %s %q", r.Status, r.Reason, strings.TrimSpace(r.Body))
}

func mustAddrPort(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
