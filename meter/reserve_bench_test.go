package meter

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
			m := open(b, budget(b, 1e9), newClock(t0))
			var writes atomic.Int64
			m.write = func(bt batch) error { writes.Add(1); return m.jour.store(bt) }
			var mu sync.Mutex
			var lat []time.Duration
			work := make(chan struct{})
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						start := time.Now()
						r, err := m.Reserve("m", 0.01)
						d := time.Since(start)
						if err != nil {
							b.Error(err)
							return
						}
						r.Settle(0.005, Usage{}, false)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}()
			}
			writes.Store(0)
			for b.Loop() {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			slices.Sort(lat)
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			b.ReportMetric(float64(sum.Microseconds())/float64(len(lat)), "reserve-µs")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(writes.Load())/float64(len(lat)), "writes/call")
		})
	}
}
