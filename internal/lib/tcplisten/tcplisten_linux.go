//go:build linux

package tcplisten

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// config sets keep-alive on the listening socket, which accepted
// connections inherit, and turns off Go's per-accept setting of it.
var config = net.ListenConfig{KeepAlive: -1, Control: setKeepAlive}

func setKeepAlive(_, _ string, rc syscall.RawConn) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, val int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepIdle.Seconds())},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepInterval.Seconds())},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepCount},
		} {
			if err = unix.SetsockoptInt(int(fd), o.level, o.opt, o.val); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
