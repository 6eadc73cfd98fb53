//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// kernelRelay: elsewhere tunnels relay through buffers, idleness is
// tracked per read and write, and writes to the client carry deadlines.
var kernelRelay = false

var errNoKernelRelay = errors.New("no kernel relay on this system")

func readNow(uintptr, []byte) (int, error) { return 0, errNoKernelRelay }

func tcpState(syscall.RawConn) (sockState, error) { return sockState{}, errNoKernelRelay }
