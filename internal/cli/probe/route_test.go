package probe

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const routeHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

func TestDefaultRoutes4(t *testing.T) {
	table := routeHeader +
		"eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" + // default via 172.17.0.1
		"eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n" + // 172.17.0.0/16 on-link
		"eth1\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0\n" + // unreachable default: skipped
		"eth2\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n" //  on-link default
	got, err := DefaultRoutes4(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{{Iface: "eth0", Gateway: netip.MustParseAddr("172.17.0.1")}, {Iface: "eth2"}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("DefaultRoutes4 mismatch (-want +got):\n%s", diff)
	}
	if _, err := DefaultRoutes4(strings.NewReader(routeHeader + "eth0\tzz\t0\t0\t0\t0\t0\t0\n")); err == nil {
		t.Error("DefaultRoutes4 with a bad line: got nil error, want one")
	}
}

func TestDefaultRoutes6(t *testing.T) {
	zero := strings.Repeat("0", 32)
	table := zero + " 00 " + zero + " 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n" +
		zero + " 00 " + zero + " 00 " + zero + " ffffffff 00000001 00000000 00200200 lo\n" + // reject route
		"fd000000000000000000000000000000 40 " + zero + " 00 " + zero + " 00000100 00000001 00000000 00000001 eth0\n"
	got, err := DefaultRoutes6(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Iface != "eth0" || got[0].Gateway != netip.MustParseAddr("fe80::1%eth0") {
		t.Errorf("DefaultRoutes6: got %+v, want one route via fe80::1%%eth0", got)
	}
}

func TestNameservers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# generated\nsearch example\nnameserver 127.0.0.11\nnameserver fd00::53\nnameserver bogus\noptions ndots:0\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Nameservers(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.11:53", "[fd00::53]:53"}, got); diff != "" {
		t.Errorf("Nameservers mismatch (-want +got):\n%s", diff)
	}
}

func FuzzDefaultRoutes(f *testing.F) {
	f.Add(routeHeader + "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
	f.Add(strings.Repeat("0", 32) + " 00 " + strings.Repeat("0", 32) + " 00 fe800000000000000000000000000001 0 0 0 3 eth0\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) ([]Route, error){
			func(s string) ([]Route, error) { return DefaultRoutes4(strings.NewReader(s)) },
			func(s string) ([]Route, error) { return DefaultRoutes6(strings.NewReader(s)) },
		} {
			routes, err := parse(s)
			if err != nil && routes != nil {
				t.Fatalf("routes %v returned with error %v", routes, err)
			}
			for _, r := range routes {
				if r.Iface == "" {
					t.Fatalf("route without interface: %+v", r)
				}
			}
		}
	})
}

const arpHeader = "IP address       HW type     Flags       HW address            Mask     Device\n"

func TestParseARP(t *testing.T) {
	table := arpHeader +
		"172.30.0.2       0x1         0x2         02:42:ac:1e:00:02     *        eth0\n" +
		"172.30.0.9       0x1         0x0         00:00:00:00:00:00     *        eth0\n" +
		"172.30.0.3       0x1         0x6         02:42:ac:1e:00:03     *        eth0\n" +
		"garbage\n"
	got, err := parseARP(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]bool{netip.MustParseAddr("172.30.0.2"): true, netip.MustParseAddr("172.30.0.3"): true}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("parseARP mismatch (-want +got):\n%s", diff)
	}
}
