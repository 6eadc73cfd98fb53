package declog

import (
	"bytes"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"
)

// TestEveryEventRoundTrips: a line of every event kind the log defines is
// read back by Unmarshal and by Read (what `egressd tail` and `suggest`
// use) as the entry that was written. A kind the writer emits but the
// reader drops would vanish from tail silently.
func TestEveryEventRoundTrips(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 123456000, time.UTC)
	for _, ev := range vocab.Events() {
		e := Entry{
			Time: t0, Event: ev, Client: "10.0.0.2", Proto: vocab.ProtoGateway, Host: "openrouter",
			Port: 443, Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Status: 200,
			BytesUp: 10, BytesDn: 20, Duration: 1500 * time.Microsecond, Provider: "openrouter",
			Model: "m", InputTokens: 3, OutputTokens: 4, CostUSD: 0.25, Estimated: true,
		}
		got, err := Unmarshal(Marshal(e))
		if err != nil {
			t.Errorf("event %q: Unmarshal(Marshal): %v", ev, err)
			continue
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("event %q: round trip (-wrote +read):\n%s", ev, diff)
		}
		var buf bytes.Buffer
		if err := Encode(&buf, e); err != nil {
			t.Fatal(err)
		}
		var read []Entry
		if err := Read(&buf, func(e Entry) error { read = append(read, e); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(read) != 1 {
			t.Errorf("event %q: Read found %d entries, want 1", ev, len(read))
		}
	}
}

// TestUnmarshalRequiresKeys: a line missing any key the table marks as
// required is not an entry.
func TestUnmarshalRequiresKeys(t *testing.T) {
	line := Marshal(Entry{Time: time.Unix(1, 0).UTC(), Client: "c", Host: "h", Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted})
	for _, f := range fields {
		if !f.must {
			continue
		}
		cut := bytes.Replace(line, []byte(`"`+f.key+`":`), []byte(`"x_`+f.key+`":`), 1)
		if _, err := Unmarshal(cut); err == nil {
			t.Errorf("line without %q: got an entry, want ErrNotEntry", f.key)
		}
	}
}
