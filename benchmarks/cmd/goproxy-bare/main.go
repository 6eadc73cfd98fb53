// Command goproxy-bare is elazarl/goproxy with nothing added: no policy,
// no rate limits, no decision log. It is the reference egressd's cost is
// measured against ("policy, rate limiting and logging together add under
// 5% CPU per request over bare goproxy").
//
// Its upstream transport keeps as many idle connections per host as
// egressd's does (-idle-per-host), so the comparison isolates egressd's
// own layers rather than goproxy's default of two idle connections per
// host. Names resolve through -host mappings only, never DNS.
//
//	goproxy-bare -listen 127.0.0.15:13128 -host origin.bench.test=127.0.0.1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/egressd/egressd/benchmarks/internal/ceiling"
)

func main() {
	hosts := ceiling.Hosts{}
	listen := flag.String("listen", "127.0.0.15:13128", "listen address (loopback)")
	idle := flag.Int("idle-per-host", 256, "idle upstream connections kept per host (goproxy's default transport keeps 2)")
	flag.Var(hosts, "host", "name=ip mapping used instead of DNS (repeatable)")
	flag.Parse()

	p := goproxy.NewProxyHttpServer()
	p.Logger = log.New(io.Discard, "", 0)
	p.ConnectDial = nil // dial through Tr.DialContext, i.e. the host map
	p.Tr = &http.Transport{
		Proxy:               nil,
		DialContext:         hosts.Dial,
		MaxIdleConns:        *idle * 4,
		MaxIdleConnsPerHost: *idle,
		IdleConnTimeout:     90 * time.Second,
	}
	srv := &http.Server{Addr: *listen, Handler: p, ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}()
	l, err := net.Listen("tcp", *listen)
	if err == nil {
		err = srv.Serve(l)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "goproxy-bare:", err)
		os.Exit(1)
	}
}
