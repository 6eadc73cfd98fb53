// Package chart draws the benchmark's PNG: horizontal bars of each
// system's throughput relative to DIRECT, grouped by metric, with the
// min–max range of the repeated runs as a whisker. It uses only the
// standard image packages and x/image's fixed bitmap font, so the suite
// needs no plotting tool.
package chart

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Bar is one system's value in a group, relative to the reference.
type Bar struct {
	Label         string
	Value         float64 // NaN = not measured (drawn as a label only)
	Min, Max      float64
	Highlight     bool
	ValueCaption  string // printed after the bar, e.g. "0.93× (12.3k req/s)"
	FailedCaption string // printed instead when Value is NaN
}

// Group is one metric: a title and its bars.
type Group struct {
	Title string
	Bars  []Bar
}

// Chart is the whole picture.
type Chart struct {
	Title     string
	Subtitle  string
	RefLabel  string // the 1.0 line, e.g. "DIRECT = 1.0"
	Groups    []Group
	Width     int // pixels; 0 = 1000
	LabelSize int // pixels left of the bars; 0 = 140
}

const (
	barH     = 16
	barGap   = 5
	groupGap = 16
	lineH    = 16
	top      = 74
	right    = 250
)

var (
	white     = color.RGBA{255, 255, 255, 255}
	ink       = color.RGBA{33, 37, 41, 255}
	grid      = color.RGBA{222, 226, 230, 255}
	refColor  = color.RGBA{214, 51, 108, 255}
	barColor  = color.RGBA{173, 181, 189, 255}
	highColor = color.RGBA{13, 110, 253, 255}
	whisker   = color.RGBA{73, 80, 87, 255}
)

// scaleMax is the x-axis maximum: at least 1.0, past the longest bar or
// whisker, rounded up to a quarter.
func (c *Chart) scaleMax() float64 {
	m := 1.0
	for _, g := range c.Groups {
		for _, b := range g.Bars {
			for _, v := range []float64{b.Value, b.Max} {
				if !math.IsNaN(v) && !math.IsInf(v, 0) {
					m = max(m, v)
				}
			}
		}
	}
	return math.Ceil(m*1.05*4) / 4
}

func (c *Chart) height() int {
	h := top + 30
	for _, g := range c.Groups {
		h += lineH + len(g.Bars)*(barH+barGap) + groupGap
	}
	return h
}

// WritePNG draws the chart.
func (c *Chart) WritePNG(w io.Writer) error {
	width, label := c.Width, c.LabelSize
	if width == 0 {
		width = 1000
	}
	if label == 0 {
		label = 140
	}
	img := image.NewRGBA(image.Rect(0, 0, width, c.height()))
	draw.Draw(img, img.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	x0, x1 := label+10, width-right
	sm := c.scaleMax()
	xOf := func(v float64) int { return x0 + int(float64(x1-x0)*v/sm) }
	plotBottom := img.Bounds().Dy() - 25

	text(img, 10, 20, c.Title, ink)
	text(img, 10, 38, c.Subtitle, whisker)
	for v := 0.0; v <= sm+1e-9; v += 0.25 {
		x := xOf(v)
		fill(img, x, top-6, 1, plotBottom-top+6, grid)
		if math.Mod(v, 0.5) < 1e-9 {
			text(img, x-10, plotBottom+15, fmt.Sprintf("%.1f", v), ink)
		}
	}
	fill(img, xOf(1), top-6, 2, plotBottom-top+6, refColor)
	text(img, xOf(1)+4, top-8, c.RefLabel, refColor)

	y := top + 10
	for _, g := range c.Groups {
		text(img, 10, y+11, g.Title, ink)
		y += lineH
		for _, b := range g.Bars {
			c.drawBar(img, b, y, label, x0, xOf)
			y += barH + barGap
		}
		y += groupGap
	}
	return png.Encode(w, img)
}

func (c *Chart) drawBar(img *image.RGBA, b Bar, y, label, x0 int, xOf func(float64) int) {
	col := barColor
	if b.Highlight {
		col = highColor
	}
	lw := font.MeasureString(basicfont.Face7x13, b.Label).Ceil()
	text(img, label-lw, y+12, b.Label, ink)
	if math.IsNaN(b.Value) {
		text(img, x0+4, y+12, b.FailedCaption, refColor)
		return
	}
	xe := xOf(b.Value)
	fill(img, x0, y, xe-x0, barH, col)
	end := xe
	if !math.IsNaN(b.Min) && !math.IsNaN(b.Max) && b.Max > b.Min {
		lo, hi := xOf(b.Min), xOf(b.Max)
		fill(img, lo, y+barH/2, hi-lo, 1, whisker)
		fill(img, lo, y+3, 1, barH-6, whisker)
		fill(img, hi, y+3, 1, barH-6, whisker)
		end = max(end, hi)
	}
	text(img, end+6, y+12, b.ValueCaption, ink)
}

func fill(img *image.RGBA, x, y, w, h int, c color.Color) {
	if w < 0 {
		x, w = x+w, -w
	}
	draw.Draw(img, image.Rect(x, y, x+w, y+h), image.NewUniform(c), image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13,
		Dot: fixed.Point26_6{X: fixed.I(x), Y: fixed.I(y)}}
	d.DrawString(s)
}
