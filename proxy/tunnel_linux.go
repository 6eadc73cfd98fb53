//go:build linux

package proxy

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kernelRelay: Linux splices between TCP sockets and reports TCP_INFO, so
// tunnels relay in the kernel (see tunnel.go).
const kernelRelay = true

// readNow is one non-blocking read(2) on a socket's descriptor.
func readNow(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// tcpState reads a TCP socket's TCP_INFO. tcpi_bytes_acked needs Linux
// 4.1 and tcpi_notsent_bytes 4.6.
func tcpState(rc syscall.RawConn) (sockState, error) {
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return sockState{}, err
	}
	if gerr != nil {
		return sockState{}, gerr
	}
	return sockState{
		quiet:   time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond,
		pending: info.Unacked > 0 || info.Notsent_bytes > 0,
		acked:   info.Bytes_acked,
	}, nil
}
