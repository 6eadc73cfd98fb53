//go:build !linux

package sockio

import (
	"errors"
	"syscall"
)

// Kernel: elsewhere tunnels relay through buffers, idleness is
// tracked per read and write, and writes to the client carry deadlines.
var Kernel = false

var errNoKernelRelay = errors.New("no kernel relay on this system")

func readNow(uintptr, []byte) (int, error) { return 0, errNoKernelRelay }

func TCPState(syscall.RawConn) (State, error) { return State{}, errNoKernelRelay }

// canPeek: Probe is wired for Linux only; elsewhere a dead pooled
// connection is found by the request that tries it.
const canPeek = false

func peekNow(uintptr, []byte) error { return errNoKernelRelay }
