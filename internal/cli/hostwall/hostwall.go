// Package hostwall owns the host-side firewall rules that close the one path
// Docker leaves open from an internal network: packets from the agent's
// bridge to addresses the host itself listens on. Docker's isolation lives in
// the FORWARD chain; traffic addressed to the host (the bridge address,
// docker0's 172.17.0.1, the host's LAN address) goes through INPUT instead,
// so an "internal: true" network still reaches the host's sshd and reverse
// proxy. The rules here drop everything arriving on the named bridge in
// INPUT. The agent needs nothing from the host: its DNS is answered by
// Docker's resolver inside its own namespace, which forwards to egressd over
// the bridge (FORWARD, not INPUT).
package hostwall

import (
	"errors"
	"fmt"
	"strings"
)

// Tag marks every rule this package installs, so Remove takes out only its
// own rules and an operator can find them with `iptables -S | grep`.
const Tag = "egressd-hostwall"

// nftTable is the nftables table holding the rules in the nftables form.
// nftables identifiers cannot contain '-', hence the underscore.
const nftTable = "egressd_hostwall"

// maxIfName is IFNAMSIZ (16) minus the terminating NUL.
const maxIfName = 15

// ErrBadBridge wraps every bridge-name validation failure.
var ErrBadBridge = errors.New("invalid bridge name")

// Form selects how the rules are written out.
type Form int

// Rule forms.
const (
	IPTables Form = iota // iptables and ip6tables command lines
	NFTables             // an nftables ruleset for `nft -f` (or /etc/nftables.conf)
)

// ValidBridge reports whether name is a Linux interface name that can be
// passed to iptables and nft as an exact match. Interface names may be up to
// 15 bytes; we accept only letters, digits, '_', '-' and '.', starting with a
// letter or digit. That excludes iptables' '+' wildcard, its '!' negation, a
// leading '-' that would read as an option, and anything a shell or the nft
// parser would interpret.
func ValidBridge(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadBridge)
	case len(name) > maxIfName:
		return fmt.Errorf("%w: %q is %d bytes, interface names have at most %d", ErrBadBridge, name, len(name), maxIfName)
	case !isAlnum(name[0]):
		return fmt.Errorf("%w: %q must start with a letter or digit", ErrBadBridge, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return fmt.Errorf("%w: %q contains %q; use letters, digits, '_', '-', '.'", ErrBadBridge, name, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ruleSpec is the iptables rule body shared by -C, -I and -D. It is
// inserted first in INPUT rather than appended: an ACCEPT earlier in the
// chain (ufw, firewalld, a distribution default) would otherwise let the
// agent's packets through before the drop is reached.
func ruleSpec(bridge string) []string {
	return []string{"-i", bridge, "-m", "comment", "--comment", Tag, "-j", "DROP"}
}

// Rules returns the rules for bridge in the given form, one line each: for
// IPTables the iptables and ip6tables commands that install them, for
// NFTables a ruleset file. It returns an error for an invalid bridge name or
// an unknown form.
func Rules(bridge string, form Form) ([]string, error) {
	if err := ValidBridge(bridge); err != nil {
		return nil, err
	}
	switch form {
	case IPTables:
		spec := strings.Join(ruleSpec(bridge), " ")
		return []string{
			"iptables -I INPUT 1 " + spec,
			"ip6tables -I INPUT 1 " + spec,
		}, nil
	case NFTables:
		// A table of its own, in the inet family (IPv4 and IPv6 at once).
		// A drop in any base chain on the input hook is final, whatever
		// other tables accept, so this does not depend on rule order.
		return []string{
			"table inet " + nftTable + " {",
			"\tchain input {",
			"\t\ttype filter hook input priority filter; policy accept;",
			fmt.Sprintf("\t\tiifname %q counter drop comment %q", bridge, Tag),
			"\t}",
			"}",
		}, nil
	}
	return nil, fmt.Errorf("unknown rule form %d", form)
}
