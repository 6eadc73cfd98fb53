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
// dialed (Contains) or handed out in a DNS answer (ContainsAddr). A
// listener on an unspecified address answers on every local address, so
// for its port any loopback or interface address counts. The interface list
// is read lazily and re-read every selfRefresh, so an address added after
// start counts too. Safe for concurrent use.
type SelfSet struct {
	exact   map[netip.AddrPort]struct{} // listeners on one address
	anyPort map[uint16]struct{}         // listeners on an unspecified address
	whole   map[netip.Addr]struct{}     // addresses that are egressd on every port (NewSelfAddrs)
	anyAddr bool                        // NewSelfAddrs was given an unspecified address
	addrs   map[netip.Addr]struct{}     // every concrete address above, for ContainsAddr
	ports   map[uint16]struct{}         // every listener's port

	mu     sync.Mutex
	local  map[netip.Addr]struct{}
	loaded time.Time
}

func newSelfSet() *SelfSet {
	return &SelfSet{
		exact:   make(map[netip.AddrPort]struct{}),
		anyPort: make(map[uint16]struct{}),
		whole:   make(map[netip.Addr]struct{}),
		addrs:   make(map[netip.Addr]struct{}),
		ports:   make(map[uint16]struct{}),
	}
}

// NewSelfSet builds the set from egressd's listener addresses.
func NewSelfSet(self []netip.AddrPort) *SelfSet {
	s := newSelfSet()
	for _, ap := range self {
		a := canon(ap.Addr())
		s.ports[ap.Port()] = struct{}{}
		if a.IsUnspecified() {
			s.anyPort[ap.Port()] = struct{}{}
			continue
		}
		s.exact[netip.AddrPortFrom(a, ap.Port())] = struct{}{}
		s.addrs[a] = struct{}{}
	}
	return s
}

// NewSelfAddrs builds the set from addresses that are egressd on every
// port, for callers that know egressd's addresses but not its listeners
// (the DNS filter). An unspecified address stands for every local address.
// Invalid addresses are ignored.
func NewSelfAddrs(ips []netip.Addr) *SelfSet {
	s := newSelfSet()
	for _, ip := range ips {
		a := canon(ip)
		switch {
		case !a.IsValid():
		case a.IsUnspecified():
			s.anyAddr = true
		default:
			s.whole[a] = struct{}{}
			s.addrs[a] = struct{}{}
		}
	}
	return s
}

func canon(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// Contains reports whether dialing ap would reach one of egressd's own
// listeners. Dialing an unspecified address (0.0.0.0, ::) reaches this
// host, so on any port egressd listens on it is egressd, whatever address
// the listener is bound to. A nil set contains nothing.
func (s *SelfSet) Contains(ap netip.AddrPort) bool {
	if s == nil {
		return false
	}
	a := canon(ap.Addr())
	if _, ok := s.exact[netip.AddrPortFrom(a, ap.Port())]; ok {
		return true
	}
	if a.IsUnspecified() {
		_, ok := s.ports[ap.Port()]
		return ok || len(s.whole) > 0 || s.anyAddr
	}
	if _, ok := s.whole[a]; ok {
		return true
	}
	if _, ok := s.anyPort[ap.Port()]; !ok && !s.anyAddr {
		return false
	}
	return s.onThisHost(a)
}

// ContainsAddr reports whether a is one of egressd's addresses on any
// port: an address a listener is bound to, an unspecified address (it
// reaches this host) when the set holds anything, or, when a listener is
// on an unspecified address, any loopback or local interface address. The
// DNS filter uses it: an answer must not point the agent at egressd under
// another name, whichever port it then tries. A nil set contains nothing.
func (s *SelfSet) ContainsAddr(a netip.Addr) bool {
	if s == nil {
		return false
	}
	a = canon(a)
	if _, ok := s.addrs[a]; ok {
		return true
	}
	if a.IsUnspecified() {
		return len(s.ports) > 0 || len(s.whole) > 0 || s.anyAddr
	}
	if len(s.anyPort) == 0 && !s.anyAddr {
		return false
	}
	return s.onThisHost(a)
}

// onThisHost reports whether a answers on this machine.
func (s *SelfSet) onThisHost(a netip.Addr) bool {
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
				s.local[canon(pfx.Addr())] = struct{}{}
			}
		}
		s.loaded = time.Now()
	}
	_, ok := s.local[a]
	return ok
}
