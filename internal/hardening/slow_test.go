//go:build hardening

package hardening

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the slow-client instance: short, so the suite is quick.
const (
	slowHeader = time.Second
	slowIdle   = 2 * time.Second
	// cutMargin is how late past its timeout a cut may come (timers,
	// scheduling, a loaded CI machine).
	cutMargin = 2 * time.Second
)

func startSlowWall(t *testing.T) *wall {
	return startWall(t, func(p *policyFile) {
		p.Header, p.Idle = slowHeader, slowIdle
		p.Unlimited = true
		p.Gateway = true
	})
}

// waitClosed reads (and discards) from c until the peer closes it and
// says how long that took; still open after within fails the test.
func waitClosed(t *testing.T, c net.Conn, within time.Duration) (time.Duration, int64) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	n, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s (read %d bytes)", within, n)
	}
	return took, n
}

// TestSlowClients: every way a client can hold a connection without
// progress is cut by its timeout. The cases wait on timers, so they run in
// parallel against one egressd.
func TestSlowClients(t *testing.T) {
	w := startSlowWall(t)
	cases := []struct {
		name string
		run  func(*testing.T, *wall)
	}{
		{"slowloris headers on the proxy", slowlorisProxy},
		{"slowloris CONNECT line", slowlorisConnect},
		{"300 slowloris connections", slowlorisMany},
		{"slowloris headers on the gateway", slowlorisGateway},
		{"slowloris on DNS over TCP", slowlorisDNS},
		{"idle keep-alive on the proxy", idleKeepAliveProxy},
		{"idle keep-alive on the gateway", idleKeepAliveGateway},
		{"idle tunnel", idleTunnel},
		{"half-closed tunnel", halfClosedTunnel},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, w)
			})
		}
	})
	w.e.alive(t)
}

func (w *wall) webHost() string { return "granted.test:" + strconv.Itoa(w.web.port) }

func slowlorisProxy(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().Proxy)
	drip(c, "GET http://"+w.webHost()+"/ HTTP/1.1\r\nHost: "+w.webHost()+"\r\nX-Slow: ", 200*time.Millisecond)
	took, _ := waitClosed(t, c, slowHeader+cutMargin)
	t.Logf("RESULT slowloris proxy cut after %s", took.Round(10*time.Millisecond))
}

func slowlorisConnect(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().Proxy)
	drip(c, "CONNECT "+w.webHost()+" HTTP/1.1\r\n", 200*time.Millisecond)
	waitClosed(t, c, slowHeader+cutMargin)
}

func slowlorisMany(t *testing.T, w *wall) {
	src := newClientIP()
	var conns []net.Conn
	for range 300 {
		c := dialFrom(t, src, w.e.a().Proxy)
		io.WriteString(c, "GET http://"+w.webHost()+"/ HTTP/1.1\r\n")
		conns = append(conns, c)
	}
	for _, c := range conns {
		waitClosed(t, c, slowHeader+cutMargin)
	}
}

func slowlorisGateway(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().Gateway)
	drip(c, "POST /p/v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: ", 200*time.Millisecond)
	took, _ := waitClosed(t, c, 15*time.Second)
	if took > slowHeader+cutMargin {
		t.Errorf("gateway slowloris cut after %s, want within timeouts.header %s + %s", took.Round(10*time.Millisecond), slowHeader, cutMargin)
	}
}

func slowlorisDNS(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().DNS)
	c.Write([]byte{0, 40, 0x12})
	took, _ := waitClosed(t, c, 10*time.Second)
	t.Logf("RESULT slowloris dns/tcp cut after %s", took.Round(10*time.Millisecond))
}

func idleKeepAliveProxy(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().Proxy)
	if r := exchange(c, http.MethodGet, "GET http://"+w.webHost()+"/ka HTTP/1.1\r\nHost: "+w.webHost()+"\r\n\r\n"); r.Status != 200 {
		t.Fatalf("got %v, want 200", r)
	}
	waitClosed(t, c, slowIdle+cutMargin)
}

func idleKeepAliveGateway(t *testing.T, w *wall) {
	c := dialFrom(t, newClientIP(), w.e.a().Gateway)
	if r := exchange(c, http.MethodGet, "GET /nope/x HTTP/1.1\r\nHost: gw\r\n\r\n"); r.Status == 0 {
		t.Fatalf("gateway: %v", r)
	}
	took, _ := waitClosed(t, c, 15*time.Second)
	if took > slowIdle+cutMargin {
		t.Errorf("idle gateway keep-alive cut after %s, want within timeouts.idle %s + %s", took.Round(10*time.Millisecond), slowIdle, cutMargin)
	}
}

func idleTunnel(t *testing.T, w *wall) {
	src := newClientIP()
	c, r := connectRaw(t, w.e, src, "granted.test:"+strconv.Itoa(w.echo.port))
	if r.Status != 200 {
		t.Fatalf("CONNECT: %v", r)
	}
	waitClosed(t, c, slowIdle+cutMargin)
	w.e.log.wait(t, logWait, match{Event: "close", Client: src, Proto: "connect"})
}

// halfClosedTunnel: the client's half-close reaches the upstream, which
// answers and closes; the client receives all of it and then the close.
func halfClosedTunnel(t *testing.T, w *wall) {
	src := newClientIP()
	c, r := connectRaw(t, w.e, src, "granted.test:"+strconv.Itoa(w.echo.port))
	if r.Status != 200 {
		t.Fatalf("CONNECT: %v", r)
	}
	io.WriteString(c, "hello\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if string(got) != "hello\nbye\n" || err != nil {
		t.Errorf("after CloseWrite: got %q (err %v), want the echo, the upstream's goodbye and EOF", got, err)
	}
	w.e.log.wait(t, logWait, match{Event: "close", Client: src, Proto: "connect"})
}

// drip writes s one byte per interval until the peer stops taking it.
func drip(c net.Conn, s string, interval time.Duration) {
	go func() {
		for i := range len(s) {
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return
			}
			time.Sleep(interval)
		}
	}()
}

// TestClientsThatNeverRead: clients that stop reading a large response or
// tunnel stream hold only bounded memory in egressd and are cut by the
// idle timeout once nothing moves.
func TestClientsThatNeverRead(t *testing.T) {
	w := startSlowWall(t)
	const readers = 50
	rss0 := w.e.rssKiB(t)
	conns, srcs := stalledReaders(t, w, readers)
	rss1 := w.e.rssKiB(t)
	t.Logf("RESULT %d stalled readers: rss before=%dKiB stalled=%dKiB", readers, rss0, rss1)
	if grew := rss1 - rss0; grew > 64<<10 {
		t.Errorf("%d stalled readers grew RSS by %d KiB, want < 64 MiB: responses are being buffered", readers, grew)
	}
	// Without reading, the client cannot see egressd's FIN (it queues
	// behind unread data), so look at egressd's end of each connection in
	// /proc/net/tcp: once cut it leaves ESTABLISHED.
	// A spliced tunnel has no per-write deadline: its stall is read from
	// TCP_INFO every quarter of timeouts.idle, so it is cut 1–1.5× idle
	// after its client's window closed (README, proxy package doc).
	deadline := time.Now().Add(slowIdle*3/2 + cutMargin)
	var open []int
	for {
		// One snapshot per pass: earlier flood tests leave ~100k TIME_WAIT
		// lines in this namespace's /proc/net/tcp, and reading it once per
		// connection made a pass take longer than the whole deadline, so
		// states sampled early in the pass were reported as still open.
		states := tcpStates(t)
		open = open[:0]
		for i, c := range conns {
			if states[tcpKey(t, c.RemoteAddr().String(), c.LocalAddr().String())] == tcpEstablished {
				open = append(open, i)
			}
		}
		if len(open) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var stuckGet, stuckTunnel int
	for _, i := range open {
		if i%2 == 0 {
			stuckGet++
		} else {
			stuckTunnel++
		}
	}
	if len(open) > 0 {
		t.Errorf("%d of %d GET /big readers and %d of %d tunnel floods: egressd's end still ESTABLISHED %s after the stall began, want cut within 1.5× timeouts.idle (%s) + %s",
			stuckGet, readers/2, stuckTunnel, readers/2, slowIdle/2+slowIdle*3/2+cutMargin, slowIdle*3/2, cutMargin)
	}
	for i, c := range conns {
		c.Close()
		if !slices.Contains(open, i) {
			w.e.log.wait(t, logWait, match{Event: "close", Client: srcs[i]})
		}
	}
	w.e.alive(t)
}

// stalledReaders opens n client connections with tiny receive buffers
// that never read: even ones GET the upstream's 64 MiB /big, odd ones open
// a tunnel to the echo upstream and flood it without reading the echo. It
// returns once every request has reached its upstream.
func stalledReaders(t *testing.T, w *wall, n int) ([]net.Conn, []string) {
	t.Helper()
	var conns []net.Conn
	var srcs []string
	bigs, tunnels := len(w.web.requests()), w.echo.total.Load()
	for i := range n {
		src := newClientIP()
		c := dialFrom(t, src, w.e.a().Proxy)
		setRcvBuf(t, c, 4096)
		if i%2 == 0 {
			io.WriteString(c, "GET http://"+w.webHost()+"/big HTTP/1.1\r\nHost: "+w.webHost()+"\r\n\r\n")
		} else {
			io.WriteString(c, "CONNECT granted.test:"+strconv.Itoa(w.echo.port)+" HTTP/1.1\r\nHost: x\r\n\r\n")
			go func() {
				buf := make([]byte, 64<<10)
				for range 1024 {
					c.SetWriteDeadline(time.Now().Add(20 * time.Second))
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
		conns, srcs = append(conns, c), append(srcs, src)
	}
	eventually(t, 10*time.Second, "every stalled request reaches its upstream", func() bool {
		return len(w.web.requests())-bigs >= n/2 && w.echo.total.Load()-tunnels >= int64(n/2)
	})
	return conns, srcs
}

const tcpEstablished = "01"

// tcpStates reads /proc/net/tcp once: the state (hex) of every IPv4
// socket, keyed by tcpKey.
func tcpStates(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	states := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 3 {
			states[f[1]+" "+f[2]] = f[3]
		}
	}
	return states
}

// tcpKey names the socket with this local and remote address in
// tcpStates.
func tcpKey(t *testing.T, local, remote string) string {
	return procAddr(t, local) + " " + procAddr(t, remote)
}

// procAddr writes ip:port the way /proc/net/tcp does (IPv4 in host byte
// order, both in hex).
func procAddr(t *testing.T, s string) string {
	ap := mustAddrPort(t, s)
	a := ap.Addr().As4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
}

// setRcvBuf shrinks the client's receive buffer so a stalled reader stalls
// egressd quickly.
func setRcvBuf(t *testing.T, c net.Conn, n int) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
	})
}
