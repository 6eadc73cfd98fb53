// Command tunnel-ceiling is the benchmark's hand-written Go CONNECT tunnel
// (package ceiling), run as its own process so its CPU time and memory can
// be read from /proc like every other system's.
//
//	tunnel-ceiling -listen 127.0.0.16:13128 -host origin.bench.test=127.0.0.1
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/egressd/egressd/benchmarks/internal/ceiling"
)

func main() {
	hosts := ceiling.Hosts{}
	listen := flag.String("listen", "127.0.0.16:13128", "listen address (loopback)")
	flag.Var(hosts, "host", "name=ip mapping used instead of DNS (repeatable)")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-ceiling:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		l.Close()
	}()
	if err := ceiling.Serve(l, hosts); err != nil {
		fmt.Fprintln(os.Stderr, "tunnel-ceiling:", err)
		os.Exit(1)
	}
}
