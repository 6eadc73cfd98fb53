// Package ceiling is the benchmark's hand-written CONNECT tunnel: the
// least work a Go proxy can do for a tunnel (parse CONNECT, dial, reply,
// splice both ways), no policy, no logging. It is the practical ceiling
// egressd's tunnels are measured against. Its names resolve through a
// fixed map only, never the system resolver, so it sends nothing off the
// loopback range the benchmark gives it.
package ceiling

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Hosts maps names to IP addresses, standing in for DNS.
type Hosts map[string]string

// Set parses "name=ip" (a flag.Value).
func (h Hosts) Set(s string) error {
	name, ip, ok := strings.Cut(s, "=")
	if !ok || name == "" || net.ParseIP(ip) == nil {
		return fmt.Errorf("host %q: want name=ip", s)
	}
	h[strings.ToLower(name)] = ip
	return nil
}

func (h Hosts) String() string { return fmt.Sprint(map[string]string(h)) }

// ErrUnknownHost is returned for a name missing from Hosts.
var ErrUnknownHost = errors.New("name not in the host map")

// Dial connects to host:port, mapping the name through h; IP literals
// are dialed as they are.
func (h Hosts) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if net.ParseIP(host) == nil {
		ip, ok := h[strings.ToLower(host)]
		if !ok {
			return nil, fmt.Errorf("dial %s: %w", addr, ErrUnknownHost)
		}
		host = ip
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext(ctx, network, net.JoinHostPort(host, port))
}

// Serve accepts tunnels on l until it is closed, then closes every open
// tunnel and returns once their goroutines have ended.
func Serve(l net.Listener, h Hosts) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		track(c, true)
		wg.Go(func() {
			defer track(c, false)
			tunnel(c, h, func(up net.Conn, add bool) { track(up, add) })
		})
	}
}

func tunnel(c net.Conn, h Hosts, track func(net.Conn, bool)) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := h.Dial(req.Context(), "tcp", req.Host)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	track(up, true)
	defer track(up, false)
	defer up.Close()
	_ = c.SetReadDeadline(time.Time{})
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		early, _ := br.Peek(n)
		if _, err := up.Write(early); err != nil {
			return
		}
	}
	Splice(c, up)
}

// Splice copies both ways until both directions are done, passing a
// half-close on. Between two *net.TCPConn, io.Copy uses splice(2), so the
// bytes never enter user space.
func Splice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(b, a)
		closeWrite(b)
	}()
	_, _ = io.Copy(a, b)
	closeWrite(a)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
