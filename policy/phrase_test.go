package policy

import (
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"
)

func TestStatusPhrase(t *testing.T) {
	long := strings.Repeat("a", 200) + ".test:443"
	tests := []struct {
		name           string
		reason         vocab.Reason
		target, detail string
		want           string
	}{
		{"not granted", vocab.ReasonNotAllowlisted, "denied.test:443", "",
			"egressd not_allowlisted: denied.test:443 is not granted"},
		{"port", vocab.ReasonPortNotAllowed, "api.github.com:8443", "",
			"egressd port_not_allowed: api.github.com:8443: the host is granted, this port is not"},
		{"detail wins", vocab.ReasonBadRequest, "", "userinfo in URL",
			"egressd bad_request: userinfo in URL"},
		{"no target", vocab.ReasonPrivateAddress, "", "",
			"egressd private_address: the target is or resolves to a private address"},
		{"gateway", vocab.ReasonBudgetExceeded, "openrouter", "",
			"egressd budget_exceeded: the spend cap is reached"},
		{"CR LF and controls", vocab.ReasonBadRequest, "", "a\r\nSet-Cookie: x\x00\x7f",
			"egressd bad_request: a??Set-Cookie: x??"},
		{"non-ASCII one ? per character", vocab.ReasonNotAllowlisted, "bücher.test:443", "",
			"egressd not_allowlisted: b?cher.test:443 is not granted"},
		{"invalid UTF-8", vocab.ReasonNotAllowlisted, "a\xff\xfeb:443", "",
			"egressd not_allowlisted: a??b:443 is not granted"},
		{"long cut cleanly", vocab.ReasonNotAllowlisted, long, "",
			"egressd not_allowlisted: " + strings.Repeat("a", MaxPhrase-4-len("egressd not_allowlisted: ")) + " ..."},
		{"unknown reason", vocab.Reason(250), "x.test:443", "",
			"egressd unknown: x.test:443 is refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := StatusPhrase(tt.reason, tt.target, tt.detail)
			if got != tt.want {
				t.Errorf("StatusPhrase(%v, %q, %q)\n got %q\nwant %q", tt.reason, tt.target, tt.detail, got, tt.want)
			}
		})
	}
}

// TestStatusPhraseEveryReason: every reason has its own words, not the
// catch-all.
func TestStatusPhraseEveryReason(t *testing.T) {
	for _, r := range vocab.Reasons() {
		if r == vocab.ReasonNone || r == vocab.ReasonAllowlisted {
			continue
		}
		got := StatusPhrase(r, "x.test:443", "")
		if strings.HasSuffix(got, " is refused") {
			t.Errorf("StatusPhrase(%v) = %q: falls through to the catch-all", r, got)
		}
	}
}

func FuzzStatusPhrase(f *testing.F) {
	f.Add(uint8(vocab.ReasonNotAllowlisted), "denied.test:443", "")
	f.Add(uint8(vocab.ReasonBadRequest), "", "a\r\nb")
	f.Add(uint8(vocab.ReasonPortNotAllowed), strings.Repeat("é", 100), "")
	f.Fuzz(func(t *testing.T, r uint8, target, detail string) {
		got := StatusPhrase(vocab.Reason(r), target, detail)
		if len(got) > MaxPhrase {
			t.Fatalf("len %d > %d: %q", len(got), MaxPhrase, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < ' ' || got[i] > '~' {
				t.Fatalf("byte %#x at %d in %q", got[i], i, got)
			}
		}
		if !strings.HasPrefix(got, "egressd "+vocab.Reason(r).String()+": ") {
			t.Fatalf("%q lacks the reason prefix", got)
		}
	})
}
