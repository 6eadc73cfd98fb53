package testutil

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Latencies runs op once per b.Loop iteration on workers goroutines at
// once and returns the latency each call reported. A failing op fails the
// benchmark and stops its worker.
func Latencies(b *testing.B, workers int, op func() (time.Duration, error)) []time.Duration {
	var mu sync.Mutex
	var lat []time.Duration
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				d, err := op()
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return lat
}

// ReportLatencies reports the mean (as meanUnit), median and 99th
// percentile of lat in µs.
func ReportLatencies(b *testing.B, lat []time.Duration, meanUnit string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(lat)), meanUnit)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
