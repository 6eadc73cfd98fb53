package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openPort returns "127.0.0.1:port" with a listener that accepts and
// closes connections until the test ends.
func openPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns "127.0.0.1:port" where nothing listens: connections
// are refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// filteredPort returns "127.0.0.1:port" where SYNs go unanswered, like a
// firewall DROP: a socket listening with backlog 0 whose one accept-queue
// slot is already taken by a connection nobody accepts. Linux drops SYNs
// for a full accept queue.
func filteredPort(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("filling the accept queue: %v", err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

func TestTCP(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		addr string
		want Reach
	}{
		{"listener", openPort(t), Connected},
		{"closed", closedPort(t), Refused},
		{"dropped", filteredPort(t), Filtered},
	}
	for _, tt := range tests {
		got, err := TCP(ctx, nil, tt.addr, 300*time.Millisecond)
		if got != tt.want {
			t.Errorf("%s: TCP(%s) = %v (%v), want %v", tt.name, tt.addr, got, err, tt.want)
		}
	}
}

// noRoutes writes empty route tables so Run reads no gateway of the
// machine the test runs on.
func noRoutes(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	r4 := filepath.Join(dir, "route")
	r6 := filepath.Join(dir, "ipv6_route")
	writeFile(t, r4, routeHeader)
	writeFile(t, r6, "")
	return r4, r6
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, o Options) *Report {
	t.Helper()
	if o.RouteFile == "" {
		o.RouteFile, o.Route6File = noRoutes(t)
	}
	o.Timeout = cmpOr(o.Timeout, 300*time.Millisecond)
	o.DNSTimeout = cmpOr(o.DNSTimeout, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// only returns the single result of check, failing the test otherwise.
func only(t *testing.T, rep *Report, check string) Result {
	t.Helper()
	got := rep.Find(check)
	if len(got) != 1 {
		t.Fatalf("%s results: got %d (%+v), want 1", check, len(got), got)
	}
	return got[0]
}

func TestHosts(t *testing.T) {
	open, closed, dropped := openPort(t), closedPort(t), filteredPort(t)
	tests := []struct {
		name   string
		ports  []int
		want   Status
		detail string
	}{
		{"listener", []int{portOf(t, open), portOf(t, dropped)}, Hole, "connected on " + strconv.Itoa(portOf(t, open))},
		{"refused", []int{portOf(t, closed)}, Hole, "host answers (refused on"},
		{"dropped", []int{portOf(t, dropped)}, Pass, "no answer on"},
	}
	for _, tt := range tests {
		rep := run(t, Options{Hosts: []string{"127.0.0.1"}, Ports: tt.ports, Bridge: "hermes0"})
		r := only(t, rep, CheckHost)
		if r.Status != tt.want || !strings.HasPrefix(r.Detail, tt.detail) {
			t.Errorf("%s: got %v %q, want %v %q...", tt.name, r.Status, r.Detail, tt.want, tt.detail)
		}
		if tt.want == Hole && !strings.Contains(r.Fix, "egressd hostwall --bridge hermes0 --apply") {
			t.Errorf("%s: fix %q does not name the hostwall command", tt.name, r.Fix)
		}
		if got := rep.OK(); got != (tt.want == Pass) {
			t.Errorf("%s: OK() = %v, want %v", tt.name, got, tt.want == Pass)
		}
	}
}

func TestGatewayFromRouteTable(t *testing.T) {
	dir := t.TempDir()
	r4, r6 := filepath.Join(dir, "route"), filepath.Join(dir, "ipv6_route")
	// Default route via 127.0.0.1 (0100007F in the kernel's byte order).
	writeFile(t, r4, routeHeader+"eth0\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
	writeFile(t, r6, "")
	open := openPort(t)
	rep := run(t, Options{Hosts: []string{HostGateway}, Ports: []int{portOf(t, open)}, RouteFile: r4, Route6File: r6})
	if r := only(t, rep, CheckHost); r.Target != "127.0.0.1" || r.Status != Hole {
		t.Errorf("host result: got %+v, want a hole at 127.0.0.1", r)
	}
	if r := only(t, rep, CheckRoute); r.Status != Info || !strings.Contains(r.Detail, "via 127.0.0.1 dev eth0") {
		t.Errorf("route result: got %+v, want info via 127.0.0.1 dev eth0", r)
	}
	if r := only(t, rep, CheckRoute6); r.Status != Pass {
		t.Errorf("route6 result: got %+v, want pass", r)
	}
}

func TestDirectAndAdmin(t *testing.T) {
	open, closed, dropped := openPort(t), closedPort(t), filteredPort(t)
	rep := run(t, Options{Direct: []string{open, closed, dropped}, Admin: open})
	want := map[string]Status{open: Hole, closed: Hole, dropped: Pass}
	for _, r := range rep.Find(CheckDirect) {
		if r.Status != want[r.Target] {
			t.Errorf("direct %s: got %v (%s), want %v", r.Target, r.Status, r.Detail, want[r.Target])
		}
		delete(want, r.Target)
	}
	if len(want) != 0 {
		t.Errorf("direct targets without a result: %v", want)
	}
	if r := only(t, rep, CheckAdmin); r.Status != Hole {
		t.Errorf("admin with a listener: got %+v, want a hole", r)
	}
	if r := only(t, run(t, Options{Admin: closed}), CheckAdmin); r.Status != Pass {
		t.Errorf("admin without a listener: got %+v, want pass", r)
	}
}

func TestLateral(t *testing.T) {
	open := openPort(t)
	port := portOf(t, open)
	// 127.0.0.0/30 holds .1 and .2; only .1 has the listener, and .2
	// refuses (loopback answers on every address).
	rep := run(t, Options{Lateral: "127.0.0.0/30", Ports: []int{port}, Admin: "127.0.0.1:1"})
	got := map[string]string{}
	for _, r := range rep.Find(CheckLateral) {
		if r.Status != Info {
			t.Errorf("lateral %s: got %v, want info", r.Target, r.Status)
		}
		got[r.Target] = r.Detail
	}
	want := map[string]string{
		"127.0.0.1": "answers on " + strconv.Itoa(port) + " (egressd)",
		"127.0.0.2": "up, no listed port open",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("lateral %s: got %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("lateral results: got %v, want %v", got, want)
	}
}

// TestLateralNeighbourTable checks the two-phase scan: an address that
// drops the first probe is scanned fully only if the neighbour table knows
// it (a host that filters TCP still answers ARP), and every address is
// scanned when the table cannot be read.
func TestLateralNeighbourTable(t *testing.T) {
	open, dropped := openPort(t), filteredPort(t)
	ports := []int{portOf(t, dropped), portOf(t, open)} // the first port is the liveness probe
	dir := t.TempDir()
	known, empty := filepath.Join(dir, "arp-known"), filepath.Join(dir, "arp-empty")
	writeFile(t, known, arpHeader+"127.0.0.1        0x1         0x2         02:42:0a:00:00:02     *        eth0\n")
	writeFile(t, empty, arpHeader+"127.0.0.1        0x1         0x0         00:00:00:00:00:00     *        eth0\n")
	tests := []struct {
		arp    string
		listed bool
	}{
		{known, true},
		{empty, false},
		{filepath.Join(dir, "missing"), true},
	}
	for _, tt := range tests {
		rep := run(t, Options{Lateral: "127.0.0.1/32", Ports: ports, ARPFile: tt.arp})
		got := false
		for _, r := range rep.Find(CheckLateral) {
			if r.Target == "127.0.0.1" && r.Detail == "answers on "+strconv.Itoa(portOf(t, open)) {
				got = true
			}
		}
		if got != tt.listed {
			t.Errorf("neighbour table %s: 127.0.0.1 listed = %v, want %v (%+v)", filepath.Base(tt.arp), got, tt.listed, rep.Find(CheckLateral))
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Proxy: "socks5://127.0.0.1:1080"},
		{Proxy: "http://127.0.0.1"},
		{Hosts: []string{"localhost"}},
		{Direct: []string{"example.com:443"}},
		{Direct: []string{"127.0.0.1"}},
		{DNS: []string{"127.0.0.1:0"}},
		{Admin: "nope"},
		{Ports: []int{0}},
		{Ports: []int{}},
		{Ports: []int{65536}},
		{Lateral: "10.0.0.0/16"},
		{Lateral: "fd00::/120"},
		{Lateral: "bogus"},
		{DeniedName: "a..b"},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v): got nil error, want one", o)
		}
	}
}

func TestHealth(t *testing.T) {
	var sawAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = r.Header.Get("Authorization")
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := Health(context.Background(), addr, "s3cret"); err != nil {
		t.Errorf("Health against a healthy server: %v", err)
	}
	if sawAuth != "Bearer s3cret" {
		t.Errorf("Authorization: got %q, want %q", sawAuth, "Bearer s3cret")
	}
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	if err := Health(context.Background(), strings.TrimPrefix(sick.URL, "http://"), ""); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Health against a 503: got %v, want an error naming 503", err)
	}
	if err := Health(context.Background(), closedPort(t), ""); err == nil {
		t.Error("Health against a closed port: got nil, want an error")
	}
}
