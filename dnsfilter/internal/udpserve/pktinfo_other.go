//go:build !linux

package udpserve

import (
	"net"
	"net/netip"
)

// Elsewhere than Linux the readers do not ask for packet info: replies
// leave from the address routing picks, so bind the DNS socket to one
// address there.

var oobSize = 0

func enablePktinfo(*net.UDPConn) bool             { return false }
func pktinfoDst([]byte) netip.Addr                { return netip.Addr{} }
func appendPktinfo(b []byte, _ netip.Addr) []byte { return b }
