//go:build !linux

package udpserve

import (
	"errors"
	"net"
)

func newMmsgConn(*net.UDPConn) (batchConn, error) {
	return nil, errors.New("udpserve: recvmmsg is Linux's")
}
