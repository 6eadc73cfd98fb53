//go:build hardening

package hardening

import (
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestConnectionCaps: one client opening far more connections than
// limits.max_conns_per_client gets 503 too_many_connections (logged) past
// the cap and is cut at once past twice the cap, while another client is
// still served.
func TestConnectionCaps(t *testing.T) {
	const perClient = 50
	w := startWall(t, func(p *policyFile) { p.MaxPer, p.MaxConns = perClient, 1000 })
	hog := newClientIP()
	authority := "granted.test:" + strconv.Itoa(w.echo.port)
	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	for range perClient {
		c, err := openTunnel(hog, w.e.a().Proxy, authority)
		if err != nil {
			t.Fatalf("tunnel within the cap: %v", err)
		}
		open = append(open, c)
	}
	// Hold twice the cap more connections open before any asks for
	// anything: the first cap's worth is over the cap (answered 503), the
	// rest beyond twice the cap (closed at accept).
	var extra []net.Conn
	for range 2 * perClient {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hog)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", w.e.a().Proxy)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		extra = append(extra, c)
		open = append(open, c)
	}
	over, cut := 0, 0
	for _, c := range extra {
		r := exchange(c, http.MethodConnect, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
		switch {
		case r.Status == http.StatusServiceUnavailable && r.Reason == vocab.ReasonTooManyConnections.String():
			over++
		case r.Status == 0:
			cut++
		default:
			t.Errorf("connection past the cap: got %v, want 503 too_many_connections or a cut", r)
		}
	}
	t.Logf("RESULT %d connections past max_conns_per_client=%d: %d answered 503, %d cut", 2*perClient, perClient, over, cut)
	if over == 0 || cut == 0 {
		t.Errorf("got %d answered 503 and %d cut, want both (503 up to twice the cap, cut beyond)", over, cut)
	}
	w.e.log.wait(t, logWait, match{Client: hog, Reason: vocab.ReasonTooManyConnections, Denied: true})
	if _, r := connectRaw(t, w.e, newClientIP(), authority); r.Status != 200 {
		t.Errorf("another client while one is at its cap: got %v, want 200", r)
	}
	w.e.alive(t)
}
