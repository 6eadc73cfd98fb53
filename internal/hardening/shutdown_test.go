//go:build hardening

package hardening

import (
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMDrain: with idle and busy tunnels open and a slow request in
// flight, SIGTERM makes egressd stop accepting, let the request finish,
// cut what is left at timeouts.shutdown, and exit cleanly in time.
func TestSIGTERMDrain(t *testing.T) {
	const shutdown = 3 * time.Second
	w := startWall(t, func(p *policyFile) {
		p.Shutdown = shutdown
		p.Unlimited = true
	})
	authority := "granted.test:" + strconv.Itoa(w.echo.port)
	var tunnels []net.Conn
	for range 50 {
		c, err := openTunnel(newClientIP(), w.e.a().Proxy, authority)
		if err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, c)
	}
	stopBusy := keepBusy(tunnels[0])
	slow := slowRequest(t, w)

	w.e.signal(t, syscall.SIGTERM)
	took, exited := w.e.waitExit(shutdown + 5*time.Second)
	stopBusy()
	t.Logf("RESULT SIGTERM with 50 tunnels open: exited after %s (timeouts.shutdown %s)", took.Round(10*time.Millisecond), shutdown)
	if !exited {
		t.Fatalf("egressd still running %s after SIGTERM (timeouts.shutdown %s)", took, shutdown)
	}
	if took > shutdown+2*time.Second {
		t.Errorf("exit took %s, want within timeouts.shutdown %s + 2s", took, shutdown)
	}
	if err := w.e.exitErr(); err != nil {
		t.Errorf("exit status after SIGTERM: %v, want 0", err)
	}
	if r := <-slow; r.Status != 200 {
		t.Errorf("request in flight at SIGTERM: got %v, want 200 (drained)", r)
	}
	for i, c := range tunnels {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("tunnel %d still open after egressd exited", i)
			}
		}
		c.Close()
	}
	if _, err := net.DialTimeout("tcp", w.e.a().Proxy, time.Second); err == nil {
		t.Error("the proxy port still accepts connections after exit")
	}
}

// keepBusy runs echo round trips on c until the returned stop is called
// (or the tunnel ends); stop waits for the loop to finish.
func keepBusy(c net.Conn) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if roundTrip(c, 4096) != nil {
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// slowRequest starts a GET of the upstream's /slow (a second to answer)
// and returns once the upstream has it; the reply arrives on the channel.
func slowRequest(t *testing.T, w *wall) <-chan reply {
	t.Helper()
	slow := make(chan reply, 1)
	go func() {
		c, err := net.Dial("tcp", w.e.a().Proxy)
		if err != nil {
			slow <- reply{Err: err}
			return
		}
		defer c.Close()
		slow <- exchange(c, "GET", "GET http://"+w.webHost()+"/slow HTTP/1.1\r\nHost: "+w.webHost()+"\r\n\r\n")
	}()
	eventually(t, 5*time.Second, "the slow request reaches the upstream", func() bool {
		for _, s := range w.web.requests() {
			if s.URI == "/slow" {
				return true
			}
		}
		return false
	})
	return slow
}
