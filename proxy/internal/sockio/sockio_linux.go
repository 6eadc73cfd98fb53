//go:build linux

package sockio

import (
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel: Linux splices between TCP sockets, and from 4.6 on its
// TCP_INFO has what the proxy reads for idleness (tcpi_bytes_acked since 4.1,
// tcpi_notsent_bytes since 4.6), so tunnels relay in the kernel. On an
// older kernel they relay through buffers, as elsewhere.
var Kernel = kernelAtLeast(4, 6)

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

// releaseAtLeast reads "major.minor" from the front of a kernel release
// ("6.1.0-18-amd64") and compares it; anything else is too old.
func releaseAtLeast(release string, major, minor int) bool {
	maj, rest, ok := strings.Cut(release, ".")
	if !ok {
		return false
	}
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		rest = rest[:i]
	}
	ma, err1 := strconv.Atoi(maj)
	mi, err2 := strconv.Atoi(rest)
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// readNow is one non-blocking read(2) on a socket's descriptor.
func readNow(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// TCPState reads a TCP socket's TCP_INFO.
func TCPState(rc syscall.RawConn) (State, error) {
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return State{}, err
	}
	if gerr != nil {
		return State{}, gerr
	}
	return State{
		Quiet:   time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond,
		Pending: info.Unacked > 0 || info.Notsent_bytes > 0,
		Acked:   info.Bytes_acked,
	}, nil
}

// canPeek: Probe can look at a socket here.
const canPeek = true

// peekNow is one non-blocking recv(2) with MSG_PEEK: EAGAIN when nothing
// is waiting, nil when bytes or the peer's FIN are.
func peekNow(fd uintptr, p []byte) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return errno
	}
}
