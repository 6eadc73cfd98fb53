package meter

import (
	"fmt"
	"os"
	"time"
)

// LedgerState is a ledger as recorded on disk.
type LedgerState struct {
	Period      string
	PeriodStart time.Time
	SpentNano   int64 // this period's spend, nano-USD
	SpentUSD    float64
	Lifetime    float64 // USD
	Models      map[string]ModelSpend
	InFlight    map[string]Pending // calls not settled when it was written
}

// Pending is one model's reservations of calls in flight.
type Pending struct {
	Calls        int64
	ReservedNano int64
}

// ReadLedger reads the ledger at path as the next Open would find it (the
// ledger file with its journal replayed), before Open charges the calls
// it holds in flight. It writes nothing: it is for tools and tests that
// look at the ledger of a running or stopped egressd, and it is the only
// correct reader, since the ledger file alone lags its journal. A missing
// ledger is an error wrapping os.ErrNotExist.
func ReadLedger(path string) (LedgerState, error) {
	l, found, _, err := readLedger(path)
	if err != nil {
		return LedgerState{}, err
	}
	if !found {
		return LedgerState{}, fmt.Errorf("ledger %s: %w", path, os.ErrNotExist)
	}
	s := LedgerState{
		Period: l.Period, PeriodStart: l.PeriodStart, SpentNano: l.SpentNano, SpentUSD: toUSD(l.SpentNano),
		Lifetime: toUSD(l.LifetimeNano), Models: make(map[string]ModelSpend, len(l.Models)),
		InFlight: make(map[string]Pending, len(l.InFlight)),
	}
	for k, v := range l.Models {
		s.Models[k] = *v
	}
	for k, v := range l.InFlight {
		s.InFlight[k] = Pending{Calls: v.Calls, ReservedNano: v.ReservedNano}
	}
	return s, nil
}
