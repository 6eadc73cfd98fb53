package probe

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// Reach is what a TCP connection attempt found.
type Reach uint8

// Reach values. Connected and Refused both mean packets reached something
// and came back; Filtered (no answer before the deadline) and Unreachable
// (the kernel has no route, or the neighbour never answered) mean they did
// not.
const (
	Filtered Reach = iota
	Connected
	Refused
	Unreachable
	DialError // anything else (bad address, out of sockets)
)

var reachNames = [...]string{"filtered", "connected", "refused", "unreachable", "error"}

func (r Reach) String() string {
	if int(r) < len(reachNames) {
		return reachNames[r]
	}
	return "unknown"
}

// MarshalText makes Reach a readable JSON string.
func (r Reach) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Answered reports whether the far side (or something on the path) replied.
func (r Reach) Answered() bool { return r == Connected || r == Refused }

// DialFunc dials a network address; net.Dialer.DialContext fits.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// TCP tries one TCP connection to addr ("ip:port") within timeout and
// classifies the outcome. The connection is closed at once; nothing is sent.
// A nil dial uses a plain net.Dialer.
func TCP(ctx context.Context, dial DialFunc, addr string, timeout time.Duration) (Reach, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		return Connected, nil
	}
	return classify(err), err
}

func classify(err error) Reach {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT):
		return Unreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return Filtered
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Filtered
	}
	return DialError
}
