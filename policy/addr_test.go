package policy

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestClassifyEdges covers every built-in range with its first and last
// address and the addresses just outside it.
func TestClassifyEdges(t *testing.T) {
	const (
		pub  = ClassPublic
		priv = ClassPrivate
		shr  = ClassShared
		loop = ClassLoopback
		uns  = ClassUnspecified
		ll   = ClassLinkLocal
		meta = ClassMetadata
		mc   = ClassMulticast
		bc   = ClassBroadcast
		res  = ClassReserved
		doc  = ClassDocumentation
		ng   = ClassNonGlobal
	)
	tests := []struct {
		addr string
		want Class
	}{
		// 0.0.0.0/8
		{"0.0.0.0", uns}, {"0.255.255.255", uns}, {"1.0.0.0", pub},
		// 10.0.0.0/8
		{"9.255.255.255", pub}, {"10.0.0.0", priv}, {"10.255.255.255", priv}, {"11.0.0.0", pub},
		// 100.64.0.0/10 (and Alibaba's metadata inside it)
		{"100.63.255.255", pub}, {"100.64.0.0", shr}, {"100.127.255.255", shr}, {"100.128.0.0", pub},
		{"100.100.100.199", shr}, {"100.100.100.200", meta}, {"100.100.100.201", shr},
		// 127.0.0.0/8
		{"126.255.255.255", pub}, {"127.0.0.0", loop}, {"127.255.255.255", loop}, {"128.0.0.0", pub},
		// 169.254.0.0/16 and the metadata address
		{"169.253.255.255", pub}, {"169.254.0.0", ll}, {"169.254.255.255", ll}, {"169.255.0.0", pub},
		{"169.254.169.253", ll}, {"169.254.169.254", meta}, {"169.254.169.255", ll},
		// 172.16.0.0/12
		{"172.15.255.255", pub}, {"172.16.0.0", priv}, {"172.31.255.255", priv}, {"172.32.0.0", pub},
		// 192.0.0.0/24
		{"191.255.255.255", pub}, {"192.0.0.0", res}, {"192.0.0.255", res}, {"192.0.1.0", pub},
		// 192.0.2.0/24
		{"192.0.1.255", pub}, {"192.0.2.0", doc}, {"192.0.2.255", doc}, {"192.0.3.0", pub},
		// 192.88.99.0/24
		{"192.88.98.255", pub}, {"192.88.99.0", res}, {"192.88.99.255", res}, {"192.88.100.0", pub},
		// 192.168.0.0/16
		{"192.167.255.255", pub}, {"192.168.0.0", priv}, {"192.168.255.255", priv}, {"192.169.0.0", pub},
		// 198.18.0.0/15
		{"198.17.255.255", pub}, {"198.18.0.0", res}, {"198.19.255.255", res}, {"198.20.0.0", pub},
		// 198.51.100.0/24
		{"198.51.99.255", pub}, {"198.51.100.0", doc}, {"198.51.100.255", doc}, {"198.51.101.0", pub},
		// 203.0.113.0/24
		{"203.0.112.255", pub}, {"203.0.113.0", doc}, {"203.0.113.255", doc}, {"203.0.114.0", pub},
		// 224.0.0.0/4
		{"223.255.255.255", pub}, {"224.0.0.0", mc}, {"239.255.255.255", mc},
		// 240.0.0.0/4 and broadcast
		{"240.0.0.0", res}, {"255.255.255.254", res}, {"255.255.255.255", bc},

		// ::, ::1 and IPv4-compatible ::/96
		{"::", uns}, {"::1", loop}, {"::2", uns}, {"::a00:1", priv}, {"::808:808", pub},
		{"::ffff:ffff", bc}, {"::1:0:0", ng},
		// ::ffff:0:0/96 IPv4-mapped
		{"::ffff:0:0", uns}, {"::ffff:10.0.0.1", priv}, {"::ffff:8.8.8.8", pub},
		{"::ffff:169.254.169.254", meta}, {"::ffff:255.255.255.255", bc},
		{"::fffe:ffff:ffff", ng}, {"::1:0:0:0", ng},
		// 64:ff9b::/96 NAT64
		{"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", ng}, {"64:ff9b::", uns}, {"64:ff9b::ffff:ffff", bc},
		{"64:ff9b::1:0:0", ng}, {"64:ff9b::808:808", pub}, {"64:ff9b::7f00:1", loop},
		{"64:ff9b::a9fe:a9fe", meta}, {"64:ff9b::c0a8:1", priv},
		// 64:ff9b:1::/48 local-use NAT64: never public
		{"64:ff9b:0:ffff:ffff:ffff:ffff:ffff", ng}, {"64:ff9b:1::", uns},
		{"64:ff9b:1:ffff:ffff:ffff:ffff:ffff", bc}, {"64:ff9b:2::", ng},
		{"64:ff9b:1::808:808", priv}, {"64:ff9b:1::a9fe:a9fe", meta},
		// 2002::/16 6to4
		{"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", pub}, {"2002::", uns},
		{"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", bc}, {"2003::", pub},
		{"2002:808:808::1", pub}, {"2002:a00:1::", priv}, {"2002:a9fe:a9fe::", meta}, {"2002:7f00:1::", loop},
		// 2001::/32 Teredo: the client is the bitwise NOT of the last 32 bits
		{"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", pub}, {"2001::", bc},
		{"2001:0:ffff:ffff:ffff:ffff:ffff:ffff", uns}, {"2001:1::", pub},
		{"2001::f7f7:f7f7", pub}, {"2001:0:1:2:3:4:f5ff:fffe", priv}, {"2001::5601:5601", meta},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", doc}, // RFC 4380's example client 192.0.2.45
		// fd00:ec2::254 metadata inside fc00::/7
		{"fd00:ec2::253", priv}, {"fd00:ec2::254", meta}, {"fd00:ec2::255", priv},
		// fc00::/7
		{"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ng}, {"fc00::", priv},
		{"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", priv}, {"fe00::", ng},
		// fe80::/10, fec0::/10
		{"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ng}, {"fe80::", ll},
		{"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ll}, {"fec0::", priv},
		{"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", priv},
		// ff00::/8
		{"ff00::", mc}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", mc},
		// 2001:db8::/32
		{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", pub}, {"2001:db8::", doc},
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", doc}, {"2001:db9::", pub},
		// 100::/64
		{"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ng}, {"100::", res},
		{"100::ffff:ffff:ffff:ffff", res}, {"100:0:0:1::", ng},
		// 2000::/3 global unicast
		{"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ng}, {"2000::", pub},
		{"3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", pub}, {"4000::", ng},
		{"2606:4700:4700::1111", pub},
		// zones are ignored
		{"fe80::1%eth0", ll},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := Classify(a); got != tt.want {
			t.Errorf("Classify(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
	if got := Classify(netip.Addr{}); got != ClassInvalid {
		t.Errorf("Classify(zero) = %s, want invalid", got)
	}
}

func TestEmbedded4(t *testing.T) {
	tests := []struct {
		in, want string // want "" = none
	}{
		{"::ffff:10.0.0.1", "10.0.0.1"},
		{"64:ff9b::808:808", "8.8.8.8"},
		{"2002:a9fe:a9fe::", "169.254.169.254"},
		{"2001::5601:5601", "169.254.169.254"},
		{"::a00:1", "10.0.0.1"},
		{"2606:4700::1", ""},
		{"8.8.8.8", ""},
	}
	for _, tt := range tests {
		got, ok := Embedded4(netip.MustParseAddr(tt.in))
		if (tt.want == "") != !ok || (ok && got.String() != tt.want) {
			t.Errorf("Embedded4(%s) = %v, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	p := mustLoad(t, `version: 1
networks:
  allow: [10.20.0.0/16, "fd12::/16", 100.64.0.0/16]
  deny: [8.8.8.0/24, "2001:4860::/32", 10.20.30.0/24]
mode: report
`)
	tests := []struct {
		addr   string
		want   vocab.Verdict
		reason vocab.Reason
	}{
		{"1.1.1.1", vocab.Allow, vocab.ReasonNone},
		{"2606:4700:4700::1111", vocab.Allow, vocab.ReasonNone},
		{"8.8.8.8", vocab.Deny, vocab.ReasonDeniedNetwork},
		{"8.8.9.8", vocab.Allow, vocab.ReasonNone},
		{"2001:4860::8888", vocab.Deny, vocab.ReasonDeniedNetwork},
		{"64:ff9b::808:808", vocab.Deny, vocab.ReasonDeniedNetwork}, // NAT64 to a denied network
		{"2002:808:808::1", vocab.Deny, vocab.ReasonDeniedNetwork},  // 6to4 to a denied network
		{"::ffff:8.8.8.8", vocab.Deny, vocab.ReasonDeniedNetwork},
		{"10.20.1.1", vocab.Allow, vocab.ReasonAllowlisted},
		{"::ffff:10.20.1.1", vocab.Allow, vocab.ReasonAllowlisted},
		{"10.20.30.1", vocab.Deny, vocab.ReasonDeniedNetwork}, // deny wins over allow
		{"10.21.0.0", vocab.Deny, vocab.ReasonPrivateAddress},
		{"100.64.1.1", vocab.Allow, vocab.ReasonAllowlisted},
		{"100.100.100.200", vocab.Deny, vocab.ReasonMetadataAddress},
		{"fd12::1", vocab.Allow, vocab.ReasonAllowlisted},
		{"fd13::1", vocab.Deny, vocab.ReasonPrivateAddress},
		{"169.254.169.254", vocab.Deny, vocab.ReasonMetadataAddress},
		{"::ffff:169.254.169.254", vocab.Deny, vocab.ReasonMetadataAddress},
		{"64:ff9b::a9fe:a9fe", vocab.Deny, vocab.ReasonMetadataAddress},
		{"fd00:ec2::254", vocab.Deny, vocab.ReasonMetadataAddress},
		{"127.0.0.1", vocab.Deny, vocab.ReasonPrivateAddress},
		{"::1", vocab.Deny, vocab.ReasonPrivateAddress},
		{"fe80::1%eth0", vocab.Deny, vocab.ReasonPrivateAddress},
		{"224.0.0.1", vocab.Deny, vocab.ReasonPrivateAddress},
	}
	for _, tt := range tests {
		got := p.CheckAddr(netip.MustParseAddr(tt.addr))
		if got.Verdict != tt.want || got.Reason != tt.reason || got.Rule != nil {
			t.Errorf("CheckAddr(%s) = %s %s %v, want %s %s", tt.addr, got.Verdict, got.Reason, got.Rule, tt.want, tt.reason)
		}
	}
	if got := p.CheckAddr(netip.Addr{}); got.Verdict != vocab.Deny || got.Reason != vocab.ReasonBadRequest {
		t.Errorf("CheckAddr(zero) = %s %s, want deny bad_request", got.Verdict, got.Reason)
	}
}

func TestNetworksAllowRejectsMetadata(t *testing.T) {
	for _, cidr := range []string{"169.254.0.0/16", "169.254.169.254/32", "0.0.0.0/0", "100.64.0.0/10", "fd00::/8", "::/0"} {
		_, err := LoadBytes([]byte("version: 1\nnetworks:\n  allow: [\""+cidr+"\"]\n"), "p.yaml")
		if err == nil {
			t.Errorf("networks.allow [%s] accepted, want an error naming the metadata address", cidr)
		}
	}
	if _, err := LoadBytes([]byte("version: 1\nnetworks:\n  allow: [169.254.1.0/24]\n"), "p.yaml"); err != nil {
		t.Errorf("networks.allow [169.254.1.0/24] (no metadata inside): %v", err)
	}
}

// TestMetadataNeverGranted: every metadata and credential endpoint is
// denied as metadata_address even when networks.allow covers its
// neighbours, in every IPv6 spelling that embeds it.
func TestMetadataNeverGranted(t *testing.T) {
	p, err := LoadBytes([]byte("version: 1\nnetworks:\n  allow: [169.254.170.0/31, 169.254.170.3/32, 169.254.170.22/32, 169.254.170.24/32, 168.63.129.15/32, 168.63.129.17/32]\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"169.254.169.254", "169.254.170.2", "169.254.170.23", "169.254.0.23", "100.100.100.200", "168.63.129.16",
		"fd00:ec2::254", "fd00:ec2::23", "::ffff:169.254.170.2", "64:ff9b::a83f:8110", "2002:a83f:8110::",
	} {
		a := netip.MustParseAddr(s)
		if got := Classify(a); got != ClassMetadata {
			t.Errorf("Classify(%s) = %s, want metadata", s, got)
		}
		if got := p.CheckAddr(a); got.Verdict != vocab.Deny || got.Reason != vocab.ReasonMetadataAddress {
			t.Errorf("CheckAddr(%s) = %s %s, want deny metadata_address", s, got.Verdict, got.Reason)
		}
	}
	// Their neighbours, granted above, stay reachable.
	for _, s := range []string{"169.254.170.3", "168.63.129.17"} {
		if got := p.CheckAddr(netip.MustParseAddr(s)); got.Verdict != vocab.Allow {
			t.Errorf("CheckAddr(%s) = %s %s, want allow via networks.allow", s, got.Verdict, got.Reason)
		}
	}
	for _, cidr := range []string{"169.254.170.0/24", "168.63.129.0/24", "fd00:ec2::/64"} {
		if _, err := LoadBytes([]byte("version: 1\nnetworks:\n  allow: [\""+cidr+"\"]\n"), "p.yaml"); err == nil {
			t.Errorf("networks.allow [%s] accepted, want an error naming the metadata address inside", cidr)
		}
	}
}
