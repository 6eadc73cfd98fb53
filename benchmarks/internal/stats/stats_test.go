package stats

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{name: "odd", in: []float64{3, 1, 2}, want: Summary{Median: 2, Min: 1, Max: 3, N: 3}},
		{name: "even", in: []float64{4, 1, 2, 3}, want: Summary{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{name: "failed runs ignored", in: []float64{nan, 5, nan}, want: Summary{Median: 5, Min: 5, Max: 5, N: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Summarize(tt.in); got != tt.want {
				t.Errorf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	if got := Summarize([]float64{nan}); got.OK() || !math.IsNaN(got.Median) {
		t.Errorf("Summarize(all failed) = %+v, want N=0 and NaN median", got)
	}
}

func TestRatio(t *testing.T) {
	a := Summary{Median: 3, Min: 3, Max: 3, N: 1}
	b := Summary{Median: 2, Min: 2, Max: 2, N: 1}
	if got := Ratio(a, b); got != 1.5 {
		t.Errorf("Ratio = %v, want 1.5", got)
	}
	if got := Ratio(a, Summarize(nil)); !math.IsNaN(got) {
		t.Errorf("Ratio(missing) = %v, want NaN", got)
	}
	if got := Ratio(a, Summary{N: 1}); !math.IsNaN(got) {
		t.Errorf("Ratio(zero) = %v, want NaN", got)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}}
	for _, tt := range tests {
		if got := Percentile(d, tt.p); got != tt.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}

func TestLatenciesBounded(t *testing.T) {
	l := NewLatencies(3)
	for _, d := range []time.Duration{5, 1, 4, 9, 9} {
		l.Add(d)
	}
	if l.Len() != 3 || l.dropped != 2 {
		t.Fatalf("Len = %d dropped = %d, want 3 and 2", l.Len(), l.dropped)
	}
	if p50, p99 := l.Quantiles(); p50 != 4 || p99 != 5 {
		t.Errorf("Quantiles = %v, %v, want 4, 5", p50, p99)
	}
}

func TestJSONNaN(t *testing.T) {
	b, err := json.Marshal(struct {
		S Summary
		R Runs
		N Num
	}{Summarize([]float64{math.NaN()}), Runs{1.5, math.NaN()}, Num(math.Inf(1))})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"S":{"median":null,"min":null,"max":null,"n":0},"R":[1.5,null],"N":null}`
	if string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	in := struct {
		S Summary
		R Runs
		N Num
	}{Summary{Median: 2, Min: 1, Max: 3, N: 3}, Runs{1.5, math.NaN()}, Num(math.NaN())}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		S Summary
		R Runs
		N Num
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if out.S != in.S || len(out.R) != 2 || out.R[0] != 1.5 || !math.IsNaN(out.R[1]) || !math.IsNaN(float64(out.N)) {
		t.Errorf("round trip of %s = %+v, want %+v", b, out, in)
	}
}
