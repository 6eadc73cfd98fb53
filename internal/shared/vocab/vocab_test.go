package vocab

import "testing"

// TestTokensRoundTrip: every value of every enum has a token of its own
// that Parse reads back, and values past the end are "unknown".
func TestTokensRoundTrip(t *testing.T) {
	checkAll(t, protoCount)
	checkAll(t, verdictCount)
	checkAll(t, reasonCount)
	checkAll(t, eventCount)
	if _, ok := ParseReason("nope"); ok {
		t.Errorf("ParseReason(nope) ok, want false")
	}
	for _, tt := range []struct{ got, want string }{
		{Reason(200).String(), "unknown"},
		{Deny.String(), "deny"}, {Report.String(), "would_deny"}, {Verdict(9).String(), "unknown"},
		{ProtoDNS.String(), "dns"}, {Proto(9).String(), "unknown"},
		{EventBudgetWarn.String(), "budget_warn"}, {Event(99).String(), "unknown"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if got := len(Events()); got != int(eventCount) {
		t.Errorf("Events() has %d kinds, want %d", got, eventCount)
	}
	if got := len(Reasons()); got != int(reasonCount) {
		t.Errorf("Reasons() has %d reasons, want %d", got, reasonCount)
	}
}

func checkAll[T interface {
	Proto | Verdict | Reason | Event
	String() string
}](t *testing.T, count T) {
	t.Helper()
	seen := map[string]bool{}
	for v := T(0); v < count; v++ {
		s := v.String()
		if s == "unknown" || s == "" || seen[s] {
			t.Errorf("%T(%d): token %q is missing or repeated", v, v, s)
		}
		seen[s] = true
		if got, ok := Parse[T](s); !ok || got != v {
			t.Errorf("Parse(%q) = %v, %v; want %v", s, got, ok, v)
		}
	}
}
