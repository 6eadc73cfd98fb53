package chart

import (
	"bytes"
	"image/png"
	"math"
	"testing"
)

func TestWritePNG(t *testing.T) {
	c := &Chart{
		Title:    "throughput relative to DIRECT",
		RefLabel: "DIRECT = 1.0",
		Groups: []Group{
			{Title: "HTTP req/s", Bars: []Bar{
				{Label: "egressd", Value: 0.5, Min: 0.45, Max: 0.55, Highlight: true, ValueCaption: "0.50x"},
				{Label: "squid", Value: 0.3, Min: math.NaN(), Max: math.NaN(), ValueCaption: "0.30x"},
				{Label: "broken", Value: math.NaN(), FailedCaption: "not measured"},
			}},
			{Title: "CONNECT", Bars: []Bar{{Label: "egressd", Value: 1.7, Min: 1.6, Max: 1.8, Highlight: true}}},
		},
	}
	if got := c.scaleMax(); got != 2 {
		t.Errorf("scaleMax = %v, want 2 (1.8 * 1.05 rounded up to a quarter)", got)
	}
	var buf bytes.Buffer
	if err := c.WritePNG(&buf); err != nil {
		t.Fatalf("WritePNG: %v", err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("decode the PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1000 || b.Dy() != c.height() {
		t.Errorf("size %v, want 1000x%d", b.Size(), c.height())
	}
	// The highlighted bar is drawn in its colour somewhere.
	found := false
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y && !found; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if r>>8 == uint32(highColor.R) && g>>8 == uint32(highColor.G) && b>>8 == uint32(highColor.B) {
				found = true
				break
			}
		}
	}
	if !found {
		t.Error("no pixel in the highlight colour: egressd's bar was not drawn")
	}
}
