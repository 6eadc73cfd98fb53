// Package money formats US dollar amounts for people: one spelling for
// spend, caps and costs wherever egressd prints them.
package money

import (
	"math"
	"strconv"
	"strings"
)

// maxDecimals is the finest figure shown: the ledger counts nano-dollars.
const maxDecimals = 9

// Format spells usd for a person: to the cent from a dollar up ($12.35),
// and below a dollar to four significant digits with trailing zeros
// dropped down to the cent ($0.1235, $0.001234, $0.50, $0.001), so a cap
// smaller than a cent reads as it was configured and small spend is not
// rounded to $0.00.
func Format(usd float64) string {
	if math.IsNaN(usd) || math.IsInf(usd, 0) {
		return "$" + strconv.FormatFloat(usd, 'f', -1, 64)
	}
	sign := ""
	if usd < 0 {
		sign, usd = "-", -usd
	}
	if usd >= 1 || usd == 0 {
		return sign + "$" + strconv.FormatFloat(usd, 'f', 2, 64)
	}
	dec := min(3-int(math.Floor(math.Log10(usd))), maxDecimals)
	s := strconv.FormatFloat(usd, 'f', dec, 64)
	if s == "1.0000" {
		return sign + "$1.00" // 0.99996 rounds up to a dollar
	}
	s = strings.TrimRight(s, "0")
	if i := strings.IndexByte(s, '.'); len(s)-i-1 < 2 {
		s += strings.Repeat("0", 2-(len(s)-i-1))
	}
	if strings.Trim(s, "0.") == "" {
		return "$0.00" // below a nano-dollar
	}
	return sign + "$" + s
}
