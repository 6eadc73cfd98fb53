package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestNormalizeHostNames(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"EXAMPLE.COM.", "example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"BÜCHER.Example.", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"ｅｘａｍｐｌｅ.com", "example.com"}, // full-width letters map to ASCII
		{"example。com", "example.com"}, // ideographic full stop is a dot
		{"faß.de", "xn--fa-hia.de"},    // non-transitional: ß stays ß
		{"_dmarc.example.com", "_dmarc.example.com"},
		{"a-b.c-d.example", "a-b.c-d.example"},
		{"1.2.3.example", "1.2.3.example"}, // numeric labels are fine if the last is not
		{"0x1g.example", "0x1g.example"},
		{"127.0.0.1x", "127.0.0.1x"}, // inet_aton rejects trailing garbage too
		{"deadbeef", "deadbeef"},     // hex without 0x is a name for inet_aton
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com"},
	}
	for _, tt := range tests {
		name, ip, err := NormalizeHost(tt.in)
		if err != nil || name != tt.want || ip.IsValid() {
			t.Errorf("NormalizeHost(%q) = %q, %v, %v; want %q, no IP, nil", tt.in, name, ip, err, tt.want)
		}
	}
}

// TestNormalizeHostIPLiterals: everything inet_aton accepts is an IP.
func TestNormalizeHostIPLiterals(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},   // one 32-bit decimal
		{"017700000001", "127.0.0.1"}, // one 32-bit octal
		{"0x7f000001", "127.0.0.1"},   // one 32-bit hex
		{"0X7F000001", "127.0.0.1"},   // upper-case hex
		{"0177.0.0.1", "127.0.0.1"},   // octal part
		{"0x7f.0.0.1", "127.0.0.1"},   // hex part
		{"0x7f.0x0.0x0.0x1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},      // a.b: b is 24 bits
		{"127.0.1", "127.0.0.1"},    // a.b.c: c is 16 bits
		{"0x7f.1", "127.0.0.1"},     // mixed
		{"0177.0x0.1", "127.0.0.1"}, // mixed
		{"169.254.43518", "169.254.169.254"},
		{"0xa9fea9fe", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"10.0.0.1.", "10.0.0.1"}, // trailing dot
		{"0", "0.0.0.0"},
		{"00", "0.0.0.0"},
		{"0x0", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"1.2.65535", "1.2.255.255"},
		{"001.002.003.004", "1.2.3.4"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[2001:DB8::1]", "2001:db8::1"},
		{"::ffff:127.0.0.1", "127.0.0.1"}, // IPv4-mapped is unmapped
		{"[::ffff:7f00:1]", "127.0.0.1"},
		{"[::ffff:169.254.169.254]", "169.254.169.254"},
		{"１２７．０．０．１", "127.0.0.1"}, // full-width digits and dots
		{"64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe"},
		{strings.Repeat("0", 300), "0.0.0.0"},                     // no length limit in inet_aton
		{"127.0.0." + strings.Repeat("0", 70) + "1", "127.0.0.1"}, // nor per part
	}
	for _, tt := range tests {
		name, ip, err := NormalizeHost(tt.in)
		if err != nil || name != "" || ip.String() != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, %v, %v; want IP %s", tt.in, name, ip, err, tt.want)
		}
	}
}

func TestNormalizeHostErrors(t *testing.T) {
	tests := []struct {
		in   string
		want hostProblem
	}{
		{"", hostEmpty},
		{".", hostEmpty},
		{"a..b", hostEmptyLabel},
		{".example.com", hostEmptyLabel},
		{"example.com..", hostEmptyLabel},
		{strings.Repeat("a", 64) + ".com", hostLabelTooLong},
		{strings.Repeat("abcdefghi.", 26) + "com", hostTooLong},
		{"exa mple.com", hostBadChar},
		{"example.com:443", hostWithPort},
		{"10.0.0.1:80", hostWithPort},
		{"[::1]:443", hostWithPort},
		{"a:b", hostBadIPv6},
		{"api%2eexample.com", hostBadChar},
		{"%31%32%37.0.0.1", hostBadChar},
		{"a/b", hostBadChar},
		{"a\x00b", hostBadChar},
		{"*.example.com", hostBadChar},
		{"-a.example", hostHyphen},
		{"a-.example", hostHyphen},
		{"1.2.3.256", hostBadIPLiteral},
		{"256.1.1.1", hostBadIPLiteral},
		{"1.2.3.4.5", hostBadIPLiteral},
		{"4294967296", hostBadIPLiteral},
		{"99999999999999999999999", hostBadIPLiteral},
		{"08.0.0.1", hostBadIPLiteral}, // 8 is not octal
		{"0x.0.0.1", hostBadIPLiteral}, // 0x without digits
		{"1.0x", hostBadIPLiteral},
		{"example.123", hostBadIPLiteral}, // numeric TLD: never a name
		{"example.0x1f", hostBadIPLiteral},
		{"1.2.65536", hostBadIPLiteral},
		{"1.16777216", hostBadIPLiteral},
		{"[::1", hostBadIPv6},
		{"[127.0.0.1]", hostBadIPv6},
		{"[fe80::1%eth0]", hostZone},
		{"fe80::1%25eth0", hostZone},
		{"::1:", hostBadIPv6},
		{"xn--zz.example", hostIDN},
		{"xn--.example", hostHyphen},
		{"a\u200db.example", hostIDN}, // zero-width joiner out of context
	}
	for _, tt := range tests {
		name, ip, prob := normalizeHost(tt.in)
		if prob != tt.want {
			t.Errorf("normalizeHost(%q) = %q, %v, %s; want %s", tt.in, name, ip, prob, tt.want)
		}
		if _, _, err := NormalizeHost(tt.in); !errors.Is(err, ErrBadHost) {
			t.Errorf("NormalizeHost(%q) error = %v, want ErrBadHost", tt.in, err)
		}
	}
}

// TestParseInetAtonAgreesWithNetip: for plain dotted quads, the inet_aton
// parser and netip agree.
func TestParseInetAtonAgreesWithNetip(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "1.2.3.4", "255.255.255.255", "192.168.1.1", "8.8.8.8"} {
		got, ok := parseInetAton(s)
		if want := netip.MustParseAddr(s); !ok || got != want {
			t.Errorf("parseInetAton(%q) = %v, %v; want %v", s, got, ok, want)
		}
	}
}

func TestNormalizeHostAllocs(t *testing.T) {
	for _, s := range []string{"api.example.com", "api.example.com.", "127.0.0.1", "0x7f.1", "[2001:db8::1]", "bad..host"} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = normalizeHost(s) }); n != 0 {
			t.Errorf("normalizeHost(%q) allocates %v times, want 0", s, n)
		}
	}
}
