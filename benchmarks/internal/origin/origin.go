// Package origin runs the servers the benchmark's traffic ends at: a
// plain-HTTP origin for forwarding, the tunnel target for CONNECT (package
// wire's protocol) and an OpenAI-shaped fake LLM provider for the gateway.
// Each listens on the loopback address it is given and stops when Close
// is called; every goroutine it starts ends then.
package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/wire"
)

// BodySize is the plain-HTTP origin's response body size: a small API
// answer, so the benchmark measures per-request overhead, not copying.
const BodySize = 512

// Server is one running origin server.
type Server struct {
	Addr  string
	close func() error
}

// Close stops the server and waits for its goroutines.
func (s *Server) Close() error { return s.close() }

func listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("listen %s: benchmark servers listen on loopback only", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

// StartHTTP serves BodySize bytes of text for every request, keep-alive.
func StartHTTP(addr string) (*Server, error) {
	body := bytes.Repeat([]byte("0123456789abcdef"), BodySize/16)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	return serveHTTP(addr, h)
}

func serveHTTP(addr string, h http.Handler) (*Server, error) {
	l, err := listen(addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("origin http server", "addr", addr, "err", err)
		}
	}()
	return &Server{Addr: l.Addr().String(), close: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if err != nil {
			err = srv.Close()
		}
		<-done
		return err
	}}, nil
}

// StartTunnelTarget serves package wire's protocol on every connection.
func StartTunnelTarget(addr string) (*Server, error) {
	l, err := listen(addr)
	if err != nil {
		return nil, err
	}
	chunk := bytes.Repeat([]byte{0xA5}, 256<<10)
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				_ = wire.Serve(c, chunk) // errors are the client hanging up mid-bulk
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			})
		}
	})
	return &Server{Addr: l.Addr().String(), close: func() error {
		err := l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return err
	}}, nil
}
