package pgtest

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

// TestPortTakenBeforeStart: a server whose port something else bound
// first says so (errPortTaken), and starting on a free port picks
// another one and serves.
func TestPortTakenBeforeStart(t *testing.T) {
	c, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Remove)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	taken := c.Port
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(taken))
	if err != nil {
		t.Fatalf("hold the server's port: %v", err)
	}
	defer ln.Close()
	if err := c.Restart(); !errors.Is(err, errPortTaken) {
		t.Fatalf("Restart on a taken port: %v, want errPortTaken", err)
	}
	if err := c.startOnFreePort(); err != nil {
		t.Fatalf("start on a free port: %v", err)
	}
	if c.Port == taken {
		t.Errorf("started on port %d, which the listener holds", taken)
	}
	if err := c.Exec("postgres", "SELECT 1"); err != nil {
		t.Errorf("query after the restart: %v", err)
	}
}
