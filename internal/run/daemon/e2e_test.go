package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// echoServer accepts on 127.0.0.2 and echoes every byte back.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// connect opens a CONNECT tunnel through the proxy and proves it carries
// bytes both ways.
func connect(t *testing.T, proxy, target string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	// Not TLS: the proxy relays it unchecked once it sees it is not a
	// ClientHello.
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("tunnel echo: %q %v", line, err)
	}
	return c
}

// TestReloadRevokingAGrantCutsItsTunnel edits the policy file under a
// running egressd: the tunnel to the revoked name closes, the tunnel to
// the name still granted keeps working.
func TestReloadRevokingAGrantCutsItsTunnel(t *testing.T) {
	port := echoServer(t)
	_, _, dns := upstreams(t)
	r := start(t, policyText(dns.Addr, port, "granted.test", "later.test"))
	revoked := connect(t, r.addrs.Proxy, "later.test:"+port)
	defer revoked.Close()
	kept := connect(t, r.addrs.Proxy, "granted.test:"+port)
	defer kept.Close()

	if err := os.WriteFile(r.path, []byte(policyText(dns.Addr, port, "granted.test")), 0o644); err != nil {
		t.Fatal(err)
	}
	// The revoked tunnel must end (EOF or reset) within the deadline; the
	// read blocks until then, so no polling is needed.
	revoked.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	if _, err := revoked.Read(buf); err == nil {
		t.Fatal("revoked tunnel still delivers data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("revoked tunnel still open 5s after the edit")
	}
	kept.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := kept.Write([]byte("pong\n")); err != nil {
		t.Fatalf("kept tunnel write: %v", err)
	}
	if n, err := io.ReadFull(kept, buf[:5]); err != nil || string(buf[:n]) != "pong\n" {
		t.Errorf("kept tunnel after reload: %q %v, want it untouched", buf[:n], err)
	}
	eventually(t, "revocation logged", func() bool {
		return strings.Contains(r.log.String(), `"reason":"revoked"`)
	})
}

// TestMetricsCountRealTraffic scrapes /metrics after real requests.
func TestMetricsCountRealTraffic(t *testing.T) {
	_, port, dns := upstreams(t)
	r := start(t, policyText(dns.Addr, port, "granted.test"))
	for range 2 {
		if code, _ := r.get(t, "http://granted.test:"+port+"/"); code != 200 {
			t.Fatalf("granted: %d", code)
		}
	}
	for range 3 {
		if code, _ := r.get(t, "http://nope.test:"+port+"/"); code != 403 {
			t.Fatalf("ungranted: %d", code)
		}
	}
	want := []string{
		`egressd_decisions_total{proto="http",reason="allowlisted",verdict="allow"} 2`,
		`egressd_decisions_total{proto="http",reason="not_allowlisted",verdict="deny"} 3`,
	}
	eventually(t, "metrics count the traffic", func() bool {
		resp, err := http.Get("http://" + r.addrs.Admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				return false
			}
		}
		return true
	})
}
