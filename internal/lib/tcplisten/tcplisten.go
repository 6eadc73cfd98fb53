// Package tcplisten opens egressd's TCP listeners with keep-alive set once
// on the listening socket instead of on every accepted connection.
//
// Keep-alive on accepted connections stays: it is how a client that
// vanished (its host gone, no FIN or RST) is noticed on a connection that
// waits for it. Go sets it with four setsockopt(2) calls per accept, a
// measurable share of a short tunnel's cost; Linux copies these options
// from the listening socket to every connection it accepts, so they are
// set there once and Go is told not to repeat them.
package tcplisten

import (
	"context"
	"net"
	"time"
)

// The keep-alive egressd's accepted connections get: Go's defaults for
// net.Listen (first probe after 15 s idle, then every 15 s, dead after 9).
const (
	keepIdle     = 15 * time.Second
	keepInterval = 15 * time.Second
	keepCount    = 9
)

// Listen is net.Listen("tcp", addr) with keep-alive on every accepted
// connection.
func Listen(addr string) (net.Listener, error) {
	return config.Listen(context.Background(), "tcp", addr)
}
