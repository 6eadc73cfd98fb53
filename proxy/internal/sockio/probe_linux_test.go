//go:build linux

package sockio

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProbe: a connection is quiet until its peer sends bytes or closes;
// a probe never consumes what it finds.
func TestProbe(t *testing.T) {
	cases := []struct {
		name string
		peer func(t *testing.T, c net.Conn)
		want bool
	}{
		{"open and silent", func(*testing.T, net.Conn) {}, true},
		{"bytes unasked", func(t *testing.T, c net.Conn) { write(t, c, "HTTP/1.1 200 OK\r\n") }, false},
		{"closed", func(t *testing.T, c net.Conn) { _ = c.Close() }, false},
		{"reset", func(t *testing.T, c net.Conn) {
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mine, peer := tcpPair(t)
			c.peer(t, peer)
			if !c.want {
				waitReadable(t, mine)
			}
			var p Probe
			p.Init(rawConn(t, mine))
			if got := p.Quiet(); got != c.want {
				t.Errorf("Quiet: got %v, want %v", got, c.want)
			}
		})
	}

	t.Run("leaves the bytes", func(t *testing.T) {
		mine, peer := tcpPair(t)
		write(t, peer, "x")
		waitReadable(t, mine)
		var p Probe
		p.Init(rawConn(t, mine))
		p.Quiet()
		b := make([]byte, 4)
		if n, err := mine.Read(b); err != nil || string(b[:n]) != "x" {
			t.Errorf("read after probe: got %q, %v, want %q", b[:n], err, "x")
		}
	})

	t.Run("no socket", func(t *testing.T) {
		var p Probe
		p.Init(nil)
		if !p.Quiet() {
			t.Error("Quiet without a socket: got false, want true")
		}
	})
}

func tcpPair(t *testing.T) (mine, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mine, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mine.Close(); _ = peer.Close() })
	return mine, peer
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func rawConn(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// waitReadable blocks until the peer's bytes or close reached c (poll(2)
// without consuming anything), so the probe has something to find.
func waitReadable(t *testing.T, c net.Conn) {
	t.Helper()
	err := rawConn(t, c).Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, 5000)
	})
	if err != nil {
		t.Fatal(err)
	}
}
