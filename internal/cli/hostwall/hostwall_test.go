package hostwall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidBridge(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"hermes0", true},
		{"br-3f2a9c1d0e4b", true},
		{"a", true},
		{"docker0", true},
		{"x.y_z-1", true},
		{"abcdefghijklmno", true},   // 15 bytes
		{"abcdefghijklmnop", false}, // 16 bytes
		{"", false},
		{"-j", false},
		{"_hidden", false},
		{".", false},
		{"docker+", false},
		{"!hermes0", false},
		{"her mes", false},
		{"hermes0;reboot", false},
		{"a/b", false},
		{"a:1", false},
		{"hermes\n0", false},
		{"hermés", false},
		{`a"b`, false},
	}
	for _, tt := range tests {
		err := ValidBridge(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidBridge(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadBridge) {
			t.Errorf("ValidBridge(%q) error %v does not wrap ErrBadBridge", tt.name, err)
		}
	}
}

func FuzzValidBridge(f *testing.F) {
	for _, s := range []string{"hermes0", "docker+", "-A", "a b", "abcdefghijklmnop"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidBridge(name) != nil {
			if _, err := Rules(name, IPTables); err == nil {
				t.Fatalf("Rules(%q) accepted a name ValidBridge rejects", name)
			}
			return
		}
		if len(name) == 0 || len(name) > 15 || name[0] == '-' {
			t.Fatalf("ValidBridge accepted %q", name)
		}
		if strings.ContainsAny(name, " \t\n\"'!+;/:$`\\") {
			t.Fatalf("ValidBridge accepted %q with a special character", name)
		}
	})
}

func TestRules(t *testing.T) {
	got, err := Rules("hermes0", IPTables)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"iptables -I INPUT 1 -i hermes0 -m comment --comment egressd-hostwall -j DROP",
		"ip6tables -I INPUT 1 -i hermes0 -m comment --comment egressd-hostwall -j DROP",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Rules(hermes0, IPTables) mismatch (-want +got):\n%s", diff)
	}

	got, err = Rules("hermes0", NFTables)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"table inet egressd_hostwall {",
		"\tchain input {",
		"\t\ttype filter hook input priority filter; policy accept;",
		"\t\tiifname \"hermes0\" counter drop comment \"egressd-hostwall\"",
		"\t}",
		"}",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Rules(hermes0, NFTables) mismatch (-want +got):\n%s", diff)
	}

	for _, form := range []Form{IPTables, NFTables} {
		if _, err := Rules("bad name", form); !errors.Is(err, ErrBadBridge) {
			t.Errorf("Rules(%q, %d) error = %v, want ErrBadBridge", "bad name", form, err)
		}
	}
	if _, err := Rules("hermes0", Form(9)); err == nil {
		t.Error("Rules with an unknown form: got nil error, want one")
	}
}

// needRoot skips tests that change the host firewall when they cannot: they
// need root and the iptables tools. The rules they add name an interface
// that does not exist, so they never affect any traffic.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to change firewall rules")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func testBridge(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "egdt" + hex.EncodeToString(b)
}

// countRules counts the tagged rules for bridge in INPUT as the tool lists them.
func countRules(t *testing.T, tool, bridge string) int {
	t.Helper()
	out, err := exec.Command(tool, "-w", "-S", "INPUT").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -S INPUT: %v: %s", tool, err, out)
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "-i "+bridge+" ") && strings.Contains(line, Tag) && strings.Contains(line, "-j DROP") {
			n++
		}
	}
	return n
}

func TestApplyRemove(t *testing.T) {
	needRoot(t, "iptables", "ip6tables")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bridge := testBridge(t)
	t.Cleanup(func() {
		if err := Remove(context.Background(), bridge); err != nil {
			t.Errorf("cleanup Remove: %v", err)
		}
	})

	for i := range 2 { // twice: the second Apply must not add a copy
		if err := Apply(ctx, bridge); err != nil {
			t.Fatalf("Apply #%d: %v", i+1, err)
		}
		for _, tool := range tools {
			if got := countRules(t, tool, bridge); got != 1 {
				t.Errorf("after Apply #%d: %s has %d rules for %s, want 1", i+1, tool, got, bridge)
			}
		}
	}
	st, err := Installed(ctx, bridge)
	if err != nil || !st.IPv4 || !st.IPv6 {
		t.Errorf("Installed after Apply = %+v, %v; want both families, nil", st, err)
	}

	// A copy added by hand is removed too.
	args := append([]string{"-w", "-A", "INPUT"}, ruleSpec(bridge)...)
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("adding a duplicate: %v: %s", err, out)
	}
	if err := Remove(ctx, bridge); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, tool := range tools {
		if got := countRules(t, tool, bridge); got != 0 {
			t.Errorf("after Remove: %s has %d rules for %s, want 0", tool, got, bridge)
		}
	}
	if err := Remove(ctx, bridge); err != nil {
		t.Errorf("Remove when absent: got %v, want nil", err)
	}
	st, err = Installed(ctx, bridge)
	if err != nil || st.IPv4 || st.IPv6 {
		t.Errorf("Installed after Remove = %+v, %v; want neither family, nil", st, err)
	}
}

// TestNFTablesParses checks the nftables form with nft's own parser in
// check mode (-c): nothing is installed.
func TestNFTablesParses(t *testing.T) {
	needRoot(t, "nft")
	lines, err := Rules(testBridge(t), NFTables)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hostwall.nft")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nft", "-c", "-f", path).CombinedOutput(); err != nil {
		t.Errorf("nft -c -f rejected the ruleset: %v: %s", err, out)
	}
}
