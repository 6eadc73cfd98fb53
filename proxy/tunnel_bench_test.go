package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/egressd/egressd/internal/shared/declog"
)

// BenchmarkNewTunnel is one short tunnel end to end: CONNECT, 200, a
// message echoed through it, close. Run with -benchmem (allocations per
// tunnel) and under strace -c -f (system calls per tunnel).
func BenchmarkNewTunnel(b *testing.B) {
	f := newFixture(b, fixOpts{mod: func(c *Config) { c.Recorder = declog.Discard{} }})
	target := f.ep("granted.test")
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\nping"
	buf := make([]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("CONNECT: %v %v", resp, err)
		}
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			b.Fatalf("echo: got %q, %v", buf, err)
		}
		_ = c.Close()
	}
}
