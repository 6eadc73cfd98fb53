package testutil

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// ClientHello returns the first flight crypto/tls sends for serverName: a
// real ClientHello, for tests of what egressd reads from a tunnel's first
// bytes. crypto/tls writes the whole first flight at once, and a net.Pipe
// hands one write to one read, so one read is the whole hello.
func ClientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatalf("reading ClientHello: %v", err)
	}
	return buf[:n]
}
