package meter

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
)

// BenchmarkReserveDurable is what the durable reservation costs a call
// before it is forwarded, with the ledger on the test's temporary disk:
// the latency of Reserve (which returns once its reservation is written)
// with 1 and 16 callers reserving at once, each followed by a Settle as in
// the gateway, and how many ledger writes each reservation cost (the group
// commit shares them: under 1 means reservations rode on shared writes).
func BenchmarkReserveDurable(b *testing.B) {
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers-%d", callers), func(b *testing.B) {
			m := open(b, budget(b, 1e9), testutil.NewClock(t0))
			var writes atomic.Int64
			m.write = func(bt batch) error { writes.Add(1); return m.jour.store(bt) }
			writes.Store(0)
			lat := testutil.Latencies(b, callers, func() (time.Duration, error) {
				start := time.Now()
				r, err := m.Reserve("m", 0.01)
				d := time.Since(start)
				if err != nil {
					return 0, err
				}
				r.Settle(0.005, Usage{}, false)
				return d, nil
			})
			testutil.ReportLatencies(b, lat, "reserve-µs")
			b.ReportMetric(float64(writes.Load())/float64(len(lat)), "writes/call")
		})
	}
}
