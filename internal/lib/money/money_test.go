package money

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "$0.00"},
		{1, "$1.00"},
		{12.345, "$12.35"},
		{8.5, "$8.50"},
		{1234.5, "$1234.50"},
		{0.5, "$0.50"},
		{0.1, "$0.10"},
		{0.12345, "$0.1235"},
		{0.012345, "$0.01235"},
		{0.0012345, "$0.001234"}, // binary 0.0012345 is just below ...45
		{0.001, "$0.001"},        // a cap below a cent, as configured
		{0.0015, "$0.0015"},
		{0.000003, "$0.000003"},
		{0.99996, "$1.00"},
		{0.99994, "$0.9999"},
		{1e-9, "$0.000000001"},
		{1e-12, "$0.00"},
		{-0.25, "-$0.25"},
		{-3, "-$3.00"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzFormat(f *testing.F) {
	for _, v := range []float64{0, 1, 0.5, 0.001, 0.99996, 123.456, 1e-10} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e15 {
			return
		}
		s := Format(v)
		num := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "$")
		got, err := strconv.ParseFloat(num, 64)
		if err != nil {
			t.Fatalf("Format(%v) = %q: not a number", v, s)
		}
		if math.Abs(v) >= 1 && math.Abs(got-math.Abs(v)) > 0.005+1e-9*math.Abs(v) {
			t.Fatalf("Format(%v) = %q: off by more than half a cent", v, s)
		}
		if a := math.Abs(v); a < 1 && a >= 1e-6 && math.Abs(got-a) > a*5e-4+1e-12 {
			t.Fatalf("Format(%v) = %q: not four significant digits", v, s)
		}
	})
}
