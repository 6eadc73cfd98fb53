package safedial

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// selfRefresh is how long the list of local interface addresses is trusted
// before it is read again.
const selfRefresh = 10 * time.Second

// SelfSet answers "is this egressd itself?" for an address about to be
// dialed. A listener on an unspecified address answers on every local
// address, so for its port any loopback or interface address counts.
type SelfSet struct {
	exact   map[netip.AddrPort]struct{}
	anyPort map[uint16]struct{}

	mu     sync.Mutex
	local  map[netip.Addr]struct{}
	loaded time.Time
}

// NewSelfSet builds the set from egressd's listener addresses.
func NewSelfSet(self []netip.AddrPort) *SelfSet {
	s := &SelfSet{exact: make(map[netip.AddrPort]struct{}), anyPort: make(map[uint16]struct{})}
	for _, ap := range self {
		a := ap.Addr().Unmap().WithZone("")
		if a.IsUnspecified() {
			s.anyPort[ap.Port()] = struct{}{}
			continue
		}
		s.exact[netip.AddrPortFrom(a, ap.Port())] = struct{}{}
	}
	return s
}

// Contains reports whether dialing ap would reach one of egressd's own
// listeners. A nil set contains nothing.
func (s *SelfSet) Contains(ap netip.AddrPort) bool {
	if s == nil {
		return false
	}
	a := ap.Addr().Unmap().WithZone("")
	if _, ok := s.exact[netip.AddrPortFrom(a, ap.Port())]; ok {
		return true
	}
	if _, ok := s.anyPort[ap.Port()]; !ok {
		return false
	}
	return a.IsLoopback() || a.IsUnspecified() || s.isLocal(a)
}

// isLocal reports whether a is assigned to a local interface. If the list
// cannot be read, every address counts as local: fail closed.
func (s *SelfSet) isLocal(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local == nil || time.Since(s.loaded) > selfRefresh {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return true
		}
		s.local = make(map[netip.Addr]struct{}, len(addrs))
		for _, ia := range addrs {
			if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
				s.local[pfx.Addr().Unmap().WithZone("")] = struct{}{}
			}
		}
		s.loaded = time.Now()
	}
	_, ok := s.local[a]
	return ok
}
