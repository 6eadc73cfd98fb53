//go:build hardening

package hardening

import (
	"strconv"
	"testing"
	"time"
)

// startSelf runs egressd with its own address deliberately made dialable:
// networks.allow and cidr grants cover 127.0.0.1 and 0.0.0.0 on egressd's
// own four ports, and names resolving there are granted. Only the
// self-address check stands between a client and a proxy loop.
func startSelf(t *testing.T) (*proc, []int) {
	t.Helper()
	d := startDNS(t)
	d.add(t, "loop.test. 60 IN A 127.0.0.1", "zero.test. 60 IN A 0.0.0.0",
		"mapped.test. 60 IN AAAA ::ffff:127.0.0.1")
	pol := policyFile{
		DNS:       []string{d.up.Addr},
		NetAllow:  []string{"127.0.0.1/32", "0.0.0.0/32"},
		Unlimited: true, // many requests to one host: no bucket may answer first
		Gateway:   true,
	}
	e := startEgressd(t, pol)
	a := e.a()
	var ports []int
	for _, s := range []string{a.Proxy, a.DNS, a.Gateway, a.Admin} {
		ports = append(ports, int(mustAddrPort(t, s).Port()))
	}
	for _, cidr := range []string{"127.0.0.1/32", "0.0.0.0/32"} {
		pol.Allow = append(pol.Allow, rule{CIDR: cidr, Ports: ports})
	}
	for _, n := range []string{"loop.test", "zero.test", "mapped.test"} {
		pol.Allow = append(pol.Allow, rule{Host: n, Ports: ports})
	}
	reloads := e.countStderr("policy reloaded")
	e.writePolicy(t, pol)
	eventually(t, 5*time.Second, "policy reload with the self grants", func() bool {
		return e.countStderr("policy reloaded") > reloads
	})
	return e, ports
}

// checkSelf sends every spelling to every one of egressd's ports, as a
// CONNECT and as an absolute URI: each must be self_address, and egressd
// must never have served a request coming from itself.
func checkSelf(t *testing.T, e *proc, ports []int, spellings []string) {
	for _, port := range ports {
		for _, sp := range spellings {
			target := sp + ":" + strconv.Itoa(port)
			t.Run("connect/"+target, func(t *testing.T) {
				src := newClientIP()
				_, r := connectRaw(t, e, src, target)
				checkDenied(t, e, src, r, spelling{reasons: one(rSelf)})
			})
			t.Run("http/"+target, func(t *testing.T) {
				src := newClientIP()
				r := getRaw(t, e, src, "http://"+target+"/")
				checkDenied(t, e, src, r, spelling{reasons: one(rSelf)})
			})
		}
	}
	// Had egressd dialed itself, one of its listeners would have logged a
	// request from 127.0.0.1.
	for _, en := range e.log.refresh() {
		if en.Client == "127.0.0.1" {
			t.Errorf("egressd served a request from itself: %s %s %s/%s", en.Event, en.Proto, en.Verdict, en.Reason)
		}
	}
	e.alive(t)
}

// TestSelfAddress: every spelling of 127.0.0.1 on egressd's proxy, DNS,
// gateway and admin ports is self_address.
func TestSelfAddress(t *testing.T) {
	e, ports := startSelf(t)
	checkSelf(t, e, ports, []string{
		"127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "127.0.0.1.",
		"[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "loop.test", "LOOP.TEST.", "mapped.test",
	})
}

// TestSelfAddressUnspecified: connecting to 0.0.0.0 reaches the local
// host, so 0.0.0.0 on egressd's ports is egressd too, even when an
// operator put 0.0.0.0 in networks.allow.
func TestSelfAddressUnspecified(t *testing.T) {
	e, ports := startSelf(t)
	checkSelf(t, e, ports, []string{"0.0.0.0", "0", "[::ffff:0.0.0.0]", "zero.test"})
}
