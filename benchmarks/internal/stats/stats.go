// Package stats owns the arithmetic of the benchmark report: the median
// and range of repeated runs, latency percentiles, and ratios that stay
// honest when a value is missing.
package stats

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Summary is the median and range of one metric over repeated runs.
// N is 0 when the metric was not measured (the system lacks the feature
// or every run failed); then the other fields are NaN.
type Summary struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summarize returns the median, minimum and maximum of runs, ignoring
// NaN entries (failed runs). An even count takes the mean of the two
// middle values.
func Summarize(runs []float64) Summary {
	v := make([]float64, 0, len(runs))
	for _, x := range runs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Summary{Median: med, Min: v[0], Max: v[n-1], N: n}
}

// OK reports whether the summary holds a measurement.
func (s Summary) OK() bool { return s.N > 0 }

// Ratio is a/b, NaN when either is missing or b is zero.
func Ratio(a, b Summary) float64 {
	if !a.OK() || !b.OK() || b.Median == 0 {
		return math.NaN()
	}
	return a.Median / b.Median
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted
// latencies by the nearest-rank method, 0 for an empty slice. The caller
// sorts once and asks for several percentiles.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Latencies collects request latencies up to a fixed capacity, so a load
// loop's memory is bounded however fast the system under test is;
// samples past the capacity are counted but not kept.
type Latencies struct {
	d       []time.Duration
	dropped int
}

// NewLatencies returns a collector that keeps at most capacity samples.
func NewLatencies(capacity int) *Latencies {
	return &Latencies{d: make([]time.Duration, 0, capacity)}
}

// Add records one latency.
func (l *Latencies) Add(d time.Duration) {
	if len(l.d) == cap(l.d) {
		l.dropped++
		return
	}
	l.d = append(l.d, d)
}

// Merge appends the samples of o, within the capacity.
func (l *Latencies) Merge(o *Latencies) {
	for _, d := range o.d {
		l.Add(d)
	}
	l.dropped += o.dropped
}

// Len is the number of samples kept.
func (l *Latencies) Len() int { return len(l.d) }

// Quantiles sorts the samples and returns p50 and p99.
func (l *Latencies) Quantiles() (p50, p99 time.Duration) {
	slices.Sort(l.d)
	return Percentile(l.d, 50), Percentile(l.d, 99)
}

// MarshalJSON writes missing values (NaN) as null: JSON has no NaN.
func (s Summary) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"median":%s,"min":%s,"max":%s,"n":%d}`,
		jsonNum(s.Median), jsonNum(s.Min), jsonNum(s.Max), s.N), nil
}

// Runs are the values of one metric over repeated runs; NaN marks a run
// that failed.
type Runs []float64

// MarshalJSON writes failed runs as null.
func (r Runs) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	for i, v := range r {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, jsonNum(v)...)
	}
	return append(b, ']'), nil
}

// Num is a float64 that marshals NaN and infinities as null.
type Num float64

// MarshalJSON writes NaN as null.
func (n Num) MarshalJSON() ([]byte, error) { return []byte(jsonNum(float64(n))), nil }

func jsonNum(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "null"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// UnmarshalJSON reads null as NaN, the inverse of MarshalJSON.
func (n *Num) UnmarshalJSON(b []byte) error {
	v, err := parseNum(b)
	*n = Num(v)
	return err
}

// UnmarshalJSON reads null entries as NaN.
func (r *Runs) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*r = make(Runs, len(raw))
	for i, x := range raw {
		v, err := parseNum(x)
		if err != nil {
			return err
		}
		(*r)[i] = v
	}
	return nil
}

// UnmarshalJSON reads null fields as NaN.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var raw struct {
		Median, Min, Max json.RawMessage
		N                int
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var errs [3]error
	s.Median, errs[0] = parseNum(raw.Median)
	s.Min, errs[1] = parseNum(raw.Min)
	s.Max, errs[2] = parseNum(raw.Max)
	s.N = raw.N
	return errors.Join(errs[:]...)
}

func parseNum(b []byte) (float64, error) {
	if len(b) == 0 || string(b) == "null" {
		return math.NaN(), nil
	}
	return strconv.ParseFloat(string(b), 64)
}
