package declog

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/money"
)

// ANSI colours for the verdict column.
const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiGreen  = "\x1b[32m"
	ansiDim    = "\x1b[2m"
	ansiReset  = "\x1b[0m"
)

// Column widths. They fit the common case; longer values push the rest of
// the line right rather than being cut, because a cut host name misleads.
const (
	wVerdict = 10 // would_deny
	wProto   = 7  // connect, gateway
	wClient  = 15 // IPv4
	wTarget  = 36
	wReason  = 22
)

// Denied reports whether e is a denial or would-denial (including a
// summary of folded denials): what `egressd tail --denied` shows.
func Denied(e Entry) bool {
	return (e.Event == vocab.EventDecision || e.Event == vocab.EventSummary) && e.Verdict != vocab.Allow
}

// Format writes e as one aligned line for a person: local time, verdict,
// proto, client, host:port, reason, then the rule or hint. With color the
// verdict is red (deny), yellow (would_deny) or green (allow). Every field
// the agent could influence is escaped, so a hostile host name cannot move
// the cursor or recolour the terminal.
func Format(w io.Writer, e Entry, color bool) error {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format(time.TimeOnly))
	b.WriteByte(' ')
	label, col := verdictLabel(e)
	if color && col != "" {
		b.WriteString(col)
		b.WriteString(pad(label, wVerdict))
		b.WriteString(ansiReset)
	} else {
		b.WriteString(pad(label, wVerdict))
	}
	b.WriteByte(' ')
	b.WriteString(pad(e.Proto.String(), wProto))
	b.WriteByte(' ')
	b.WriteString(pad(Sanitize(e.Client), wClient))
	b.WriteByte(' ')
	b.WriteString(pad(target(e), wTarget))
	b.WriteByte(' ')
	detail, tail := details(e)
	b.WriteString(pad(detail, wReason))
	if tail != "" {
		b.WriteByte(' ')
		if color {
			b.WriteString(ansiDim + tail + ansiReset)
		} else {
			b.WriteString(tail)
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, strings.TrimRight(b.String(), " \n")+"\n")
	return err
}

func verdictLabel(e Entry) (string, string) {
	switch e.Event {
	case vocab.EventClose:
		return "close", ""
	case vocab.EventUsage:
		return "usage", ""
	case vocab.EventAsk:
		return "ask", ansiYellow
	}
	switch e.Verdict {
	case vocab.Deny:
		return e.Verdict.String(), ansiRed
	case vocab.Report:
		return e.Verdict.String(), ansiYellow
	case vocab.Allow:
		return e.Verdict.String(), ansiGreen
	}
	return e.Verdict.String(), ""
}

// target is host:port, "host A" for DNS, the provider/model for usage.
func target(e Entry) string {
	host := Sanitize(e.Host)
	switch {
	case e.Event == vocab.EventUsage:
		return Sanitize(e.Provider) + "/" + Sanitize(e.Model)
	case e.Proto == vocab.ProtoDNS:
		if e.QType != "" {
			return host + " " + Sanitize(e.QType)
		}
		return host
	case e.Port != 0:
		return net.JoinHostPort(host, strconv.Itoa(int(e.Port)))
	case e.Path != "":
		return host + Sanitize(e.Path)
	}
	return host
}

// details is the reason column and what follows it.
func details(e Entry) (string, string) {
	switch e.Event {
	case vocab.EventClose:
		return fmt.Sprintf("up %s down %s", FormatBytes(e.BytesUp), FormatBytes(e.BytesDn)),
			e.Duration.Round(time.Millisecond).String()
	case vocab.EventUsage:
		est := ""
		if e.Estimated {
			est = " (estimated)"
		}
		return fmt.Sprintf("in %d out %d", e.InputTokens, e.OutputTokens),
			money.Format(e.CostUSD) + est
	case vocab.EventSummary:
		return e.Reason.String(), fmt.Sprintf("x%d more in the last window", e.Count) +
			sampleList("; hosts ", e.Hosts) + sampleList("; clients ", e.Clients)
	}
	tail := e.Hint
	if e.Verdict == vocab.Allow || tail == "" {
		tail = e.Rule
	}
	return e.Reason.String(), Sanitize(tail)
}

// sampleList is an overflow summary's sample for a person: label, then the
// names, escaped, comma-separated; "" when there is none.
func sampleList(label string, names []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(label)
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(Sanitize(n))
	}
	return b.String()
}

// FormatBytes renders a byte count for people: 512B, 1.5KiB, 3.2GiB.
// Negative counts (never logged) render as 0B.
func FormatBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func pad(s string, w int) string {
	if len(s) >= w {
		return s
	}
	return s + strings.Repeat(" ", w-len(s))
}

// Sanitize returns s unchanged when it is plain printable ASCII, and
// quoted with Go escapes otherwise, so an agent-chosen string (a host
// name, a query type) printed to a terminal cannot move the cursor,
// recolour the screen or pass for another line. Everything that prints
// decision-log fields for a person uses it.
func Sanitize(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}
