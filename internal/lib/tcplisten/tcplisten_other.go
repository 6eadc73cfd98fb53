//go:build !linux

package tcplisten

import "net"

// config: where accepted sockets may not inherit the listener's options,
// Go sets keep-alive on each one.
var config = net.ListenConfig{KeepAlive: keepIdle, KeepAliveConfig: net.KeepAliveConfig{
	Enable: true, Idle: keepIdle, Interval: keepInterval, Count: keepCount,
}}
