//go:build hardening

package hardening

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"
)

// Load sizes: what the suite proves egressd holds.
const (
	idleTunnels    = 5000
	floodConnects  = 50000
	floodQueries   = 50000
	floodWorkers   = 32
	rssBoundMiB    = 300
	floodMarginMiB = 12
)

// loadClients is how many source addresses the load spreads over, so no
// address runs short of ephemeral ports.
const loadClients = 100

// openTunnel CONNECTs to authority from src and returns the tunnel.
func openTunnel(src, proxy, authority string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", proxy)
	if err != nil {
		return nil, err
	}
	r := exchange(c, http.MethodConnect, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
	if r.Status != 200 {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %v", authority, r)
	}
	return c, nil
}

// roundTrip sends n bytes through an echo tunnel and reads them back.
func roundTrip(c net.Conn, n int) error {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	msg := bytes.Repeat([]byte("x"), n)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	return <-errc
}

// TestLoadIdleTunnels holds 5,000 idle CONNECT tunnels open while active
// traffic flows, records egressd's RSS, and shows that a grant added by
// editing the policy works with all of them open.
func TestLoadIdleTunnels(t *testing.T) {
	w := startWall(t, func(p *policyFile) {
		p.MaxPer, p.MaxConns = idleTunnels, 3*idleTunnels
		p.Idle = 5 * time.Minute
	})
	w.dns.add(t, "newgrant.test. 60 IN A "+upstreamIP)
	rssStart := w.e.rssKiB(t)
	srcs := make([]string, loadClients)
	for i := range srcs {
		srcs[i] = newClientIP()
	}
	start := time.Now()
	tunnels := openTunnels(t, w, srcs, idleTunnels)
	opened := time.Since(start)
	eventually(t, 30*time.Second, "upstream sees every tunnel", func() bool { return w.echo.open.Load() >= idleTunnels })
	if err := activeTraffic(w, srcs, tunnels); err != nil {
		t.Errorf("active traffic with %d idle tunnels open: %v", idleTunnels, err)
	}
	rss := w.e.rssKiB(t)
	t.Logf("RESULT tunnels=%d opened_in=%s rss_start=%dKiB rss_with_tunnels=%dKiB (%.1f KiB/tunnel)",
		idleTunnels, opened.Round(time.Millisecond), rssStart, rss, float64(rss-rssStart)/idleTunnels)
	if rss > rssBoundMiB<<10 {
		t.Errorf("RSS with %d tunnels: got %d MiB, want < %d MiB", idleTunnels, rss>>10, rssBoundMiB)
	}
	grantWhileLoaded(t, w, tunnels)
	w.e.alive(t)
	// Closing the clients releases every upstream connection.
	for _, c := range tunnels {
		c.Close()
	}
	eventually(t, 30*time.Second, "upstream connections released", func() bool { return w.echo.open.Load() == 0 })
	t.Logf("RESULT rss_after_close=%dKiB", w.e.rssKiB(t))
}

// openTunnels opens n tunnels to the echo upstream, spread over srcs; they
// are closed when the test ends.
func openTunnels(t *testing.T, w *wall, srcs []string, n int) []net.Conn {
	t.Helper()
	authority := "granted.test:" + strconv.Itoa(w.echo.port)
	tunnels := make([]net.Conn, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	parallel(64, n, func(i int) {
		c, err := openTunnel(srcs[i%len(srcs)], w.e.a().Proxy, authority)
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
			return
		}
		tunnels[i] = c
	})
	t.Cleanup(func() {
		for _, c := range tunnels {
			if c != nil {
				c.Close()
			}
		}
	})
	if k := failed.Load(); k != 0 {
		t.Fatalf("%d of %d tunnels failed to open; first: %v", k, n, firstErr.Load())
	}
	return tunnels
}

// activeTraffic runs bulk echo through 8 of the tunnels and 400
// plain-HTTP requests through the proxy, concurrently.
func activeTraffic(w *wall, srcs []string, tunnels []net.Conn) error {
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 16 {
				if err := roundTrip(tunnels[i*len(tunnels)/8], 256<<10); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	req := "GET http://" + w.webHost() + "/active HTTP/1.1\r\nHost: " + w.webHost() + "\r\n\r\n"
	parallel(8, 400, func(i int) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcs[i%len(srcs)])}}
		c, err := d.Dial("tcp", w.e.a().Proxy)
		if err != nil {
			firstErr.CompareAndSwap(nil, err)
			return
		}
		defer c.Close()
		if r := exchange(c, http.MethodGet, req); r.Status != 200 {
			firstErr.CompareAndSwap(nil, fmt.Errorf("GET: %v", r))
		}
	})
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// grantWhileLoaded adds a grant by editing the policy and uses it, then
// checks that the reload left the open tunnels alone.
func grantWhileLoaded(t *testing.T, w *wall, tunnels []net.Conn) {
	t.Helper()
	pol := w.policyWith(func(p *policyFile) {
		p.Allow = append(p.Allow, rule{Host: "newgrant.test", Ports: []int{w.echo.port}})
	})
	reloads := w.e.countStderr("policy reloaded")
	w.e.writePolicy(t, pol)
	eventually(t, 10*time.Second, "reload with the new grant", func() bool { return w.e.countStderr("policy reloaded") > reloads })
	nc, err := openTunnel(newClientIP(), w.e.a().Proxy, "newgrant.test:"+strconv.Itoa(w.echo.port))
	if err != nil {
		t.Fatalf("new grant with %d tunnels open: %v", len(tunnels), err)
	}
	defer nc.Close()
	if err := roundTrip(nc, 1024); err != nil {
		t.Errorf("traffic on the newly granted tunnel: %v", err)
	}
	for _, i := range []int{0, len(tunnels) / 2, len(tunnels) - 1} {
		if err := roundTrip(tunnels[i], 64); err != nil {
			t.Errorf("tunnel %d after the reload: %v", i, err)
		}
	}
}

// policyWith is the wall's policy with a change, for reload tests.
func (w *wall) policyWith(change func(*policyFile)) policyFile {
	p := w.pol
	p.Allow = append([]rule(nil), w.pol.Allow...)
	change(&p)
	return p
}

// parallel runs f(0..n-1) on k goroutines.
func parallel(k, n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// TestLoadFlood floods egressd twice with the same number of distinct
// hostile names — CONNECTs to ungranted hosts, CONNECTs to granted-pattern
// names that do not resolve, and DNS queries for both — and shows that the
// second flood does not grow its memory: limiter tables, the resolver
// cache and the log throttle are bounded.
func TestLoadFlood(t *testing.T) {
	w := startWall(t, func(p *policyFile) {
		p.Allow = append(p.Allow, rule{Host: "*.wild.test", Ports: []int{443}})
	})
	srcs := make([]string, loadClients)
	for i := range srcs {
		srcs[i] = newClientIP()
	}
	flood := func(names []string) (time.Duration, int64) {
		start := time.Now()
		bad := floodConnect(t, w, srcs, names) + floodDNS(t, w, srcs, names)
		return time.Since(start), bad
	}
	names1, names2 := floodNames(1), floodNames(2)
	rss0 := w.e.rssKiB(t)
	d1, bad1 := flood(names1)
	rss1 := w.e.rssKiB(t)
	d2, bad2 := flood(names2)
	rss2 := w.e.rssKiB(t)
	t.Logf("RESULT flood connects=%d queries=%d: rss before=%dKiB after1=%dKiB (%s) after2=%dKiB (%s); log=%d bytes",
		floodConnects, floodQueries, rss0, rss1, d1.Round(time.Millisecond), rss2, d2.Round(time.Millisecond), fileSize(w.e.logPath))
	if bad1+bad2 != 0 {
		t.Errorf("%d flood requests did not get their denial (403/502, NXDOMAIN)", bad1+bad2)
	}
	if grew := rss2 - rss1; grew > floodMarginMiB<<10 {
		t.Errorf("the second equal flood grew RSS by %d KiB, want < %d MiB: something keeps per-name state without bound", grew, floodMarginMiB)
	}
	if rss2 > rssBoundMiB<<10 {
		t.Errorf("RSS after the floods: %d MiB, want < %d MiB", rss2>>10, rssBoundMiB)
	}
	// Only the granted-pattern names (a fifth) went upstream: per flood,
	// A and AAAA for each CONNECT and A for each DNS query.
	if n, max := w.dns.up.Total(), 2*3*floodConnects/5; n > max {
		t.Errorf("upstream DNS saw %d queries, want at most %d (granted-pattern names only)", n, max)
	}
	for i := 1; i < 1000; i += 7 {
		if i%5 != 0 && w.dns.up.Count(names1[i]+".", dns.TypeA) != 0 {
			t.Errorf("upstream was asked about ungranted %s", names1[i])
		}
	}
	w.e.alive(t)
	if r := getRaw(t, w.e, newClientIP(), "http://"+w.webHost()+"/after-flood"); r.Status != 200 {
		t.Errorf("granted request after the floods: got %v, want 200", r)
	}
}

// floodConnect sends one CONNECT per name, each on a new connection, and
// counts the answers that were not a denial (403, or 502 for the names
// that do not resolve).
func floodConnect(t *testing.T, w *wall, srcs, names []string) int64 {
	var bad atomic.Int64
	parallel(floodWorkers, len(names), func(i int) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcs[i%len(srcs)])}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", w.e.a().Proxy)
		if err != nil {
			noteBad(t, &bad, "connect "+names[i]+": dial: "+err.Error())
			return
		}
		defer c.Close()
		r := exchange(c, http.MethodConnect, "CONNECT "+names[i]+":443 HTTP/1.1\r\nHost: "+names[i]+":443\r\n\r\n")
		if r.Status != 403 && r.Status != 502 {
			noteBad(t, &bad, fmt.Sprintf("connect %s: status %d reason %q err %v", names[i], r.Status, r.Reason, r.Err))
		}
	})
	return bad.Load()
}

// noteBad counts a flood request that did not get its denial and logs the
// first few, so a failure says which edge and how.
func noteBad(t *testing.T, bad *atomic.Int64, what string) {
	if bad.Add(1) <= 5 {
		t.Log("flood:", what)
	}
}

// floodDNS asks for A of every name (floodQueries in all), 100 per UDP
// socket, and counts the answers that were not NXDOMAIN.
func floodDNS(t *testing.T, w *wall, srcs, names []string) int64 {
	var bad atomic.Int64
	server := net.UDPAddrFromAddrPort(mustAddrPort(t, w.e.a().DNS))
	parallel(floodWorkers, floodQueries/100, func(i int) {
		conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(srcs[i%len(srcs)])}, server)
		if err != nil {
			bad.Add(100)
			return
		}
		defer conn.Close()
		c := &dns.Conn{Conn: conn}
		for j := range 100 {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(names[(i*100+j)%len(names)]), dns.TypeA)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.WriteMsg(m); err != nil {
				noteBad(t, &bad, "dns "+m.Question[0].Name+": write: "+err.Error())
				continue
			}
			if r, err := c.ReadMsg(); err != nil || r.Rcode != dns.RcodeNameError {
				rcode := -1
				if r != nil {
					rcode = r.Rcode
				}
				noteBad(t, &bad, fmt.Sprintf("dns %s: rcode %d err %v", m.Question[0].Name, rcode, err))
			}
		}
	})
	return bad.Load()
}

// floodNames are distinct random names: four in five ungranted, one in
// five under the granted pattern *.wild.test (which does not resolve).
func floodNames(round int) []string {
	rng := rand.New(rand.NewPCG(uint64(round), 7))
	names := make([]string, floodConnects)
	for i := range names {
		suffix := "flood.example"
		if i%5 == 0 {
			suffix = "wild.test"
		}
		names[i] = fmt.Sprintf("r%d-%x.%s", round, rng.Uint64(), suffix)
	}
	return names
}

// TestRateLimitedFlood: with the default token buckets, one client hammering
// a granted host is answered 429 with Retry-After (logged), while another
// client is still served.
func TestRateLimitedFlood(t *testing.T) {
	w := startWall(t, func(p *policyFile) { p.Unlimited = false })
	hammer := newClientIP()
	authority := "granted.test:" + strconv.Itoa(w.echo.port)
	var limited, allowed atomic.Int64
	var badRetry atomic.Value
	parallel(16, 2000, func(int) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hammer)}}
		c, err := d.Dial("tcp", w.e.a().Proxy)
		if err != nil {
			return
		}
		defer c.Close()
		r := exchange(c, http.MethodConnect, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
		switch {
		case r.Status == 200:
			allowed.Add(1)
		case r.Status == http.StatusTooManyRequests && r.Reason == "rate_limited":
			limited.Add(1)
			if ra, err := strconv.Atoi(r.resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				badRetry.Store(r.resp.Header.Get("Retry-After"))
			}
		}
	})
	t.Logf("RESULT 2000 CONNECTs from one client: %d allowed, %d rate_limited", allowed.Load(), limited.Load())
	if limited.Load() < 1500 {
		t.Errorf("got %d rate_limited of 2000, want the bucket (20/s, burst 40) to refuse most", limited.Load())
	}
	if v := badRetry.Load(); v != nil {
		t.Errorf("429 with Retry-After %q, want a positive number of seconds", v)
	}
	w.e.log.wait(t, logWait, match{Client: hammer, Reason: vocab.ReasonRateLimited, Denied: true})
	if r := getRaw(t, w.e, newClientIP(), "http://ungranted.test:"+strconv.Itoa(w.web.port)+"/"); r.Status != 403 {
		t.Errorf("another client during the flood: got %v, want its own answer (403 not_allowlisted)", r)
	}
	w.e.alive(t)
}
